"use strict";(self.rspackChunkftkit_labextension=self.rspackChunkftkit_labextension||[]).push([[232],{475(t,r,e){var o=e(601),n=e.n(o),i=e(314),a=(e.n(i))()(n());a.push([t.id,`/* The "Fine-tuning runs" sidebar and the report tab. Colours come from JupyterLab's theme
   variables, so the light and dark themes both work. */

.ftkit-runs-sidebar {
  display: flex;
  flex-direction: column;
  min-width: 240px;
  overflow-y: auto;
  background: var(--jp-layout-color1);
  color: var(--jp-ui-font-color1);
  font-size: var(--jp-ui-font-size1);
}

.ftkit-runs-header {
  display: flex;
  align-items: center;
  justify-content: space-between;
  padding: 8px 12px 4px;
}

.ftkit-runs-title {
  margin: 0;
  font-size: var(--jp-ui-font-size1);
  font-weight: 600;
  text-transform: uppercase;
  letter-spacing: 0.04em;
}

.ftkit-runs-toolbar {
  padding: 4px 12px;
}

.ftkit-runs-status {
  padding: 0 12px;
  color: var(--jp-ui-font-color2);
}

.ftkit-runs-status:empty {
  display: none;
}

.ftkit-runs-status.ftkit-mod-error,
.ftkit-report-note.ftkit-mod-error {
  color: var(--jp-error-color1);
}

.ftkit-runs-where {
  padding: 6px 12px;
  color: var(--jp-ui-font-color2);
  font-size: var(--jp-ui-font-size0);
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
}

.ftkit-runs-list {
  list-style: none;
  margin: 0;
  padding: 0;
}

.ftkit-run {
  padding: 8px 12px;
  border-bottom: var(--jp-border-width) solid var(--jp-border-color2);
}

.ftkit-run-head {
  display: flex;
  align-items: center;
  gap: 6px;
}

.ftkit-run-name {
  flex: 1 1 auto;
  min-width: 0;
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
  font-weight: 600;
}

.ftkit-badge {
  flex: 0 0 auto;
  padding: 1px 6px;
  border-radius: 8px;
  font-size: var(--jp-ui-font-size0);
  color: white;
  background: var(--jp-layout-color4);
}

.ftkit-badge-running {
  background: var(--jp-brand-color1);
}

.ftkit-badge-completed {
  background: var(--jp-success-color1);
}

.ftkit-badge-stopped {
  background: var(--jp-warn-color1);
}

.ftkit-badge-failed {
  background: var(--jp-error-color1);
}

.ftkit-badge-interrupted {
  background: var(--jp-warn-color0);
}

.ftkit-run-body {
  display: flex;
  align-items: center;
  gap: 8px;
  margin-top: 4px;
}

.ftkit-sparkline {
  flex: 0 0 auto;
  background: var(--jp-layout-color2);
  border-radius: 2px;
}

.ftkit-sparkline-line {
  fill: none;
  stroke: var(--jp-brand-color1);
  stroke-width: 1.5;
  stroke-linejoin: round;
}

.ftkit-run-figures {
  display: flex;
  flex-direction: column;
  min-width: 0;
  font-size: var(--jp-ui-font-size0);
  color: var(--jp-ui-font-color1);
}

.ftkit-run-figures span:empty {
  display: none;
}

.ftkit-run-metric {
  font-weight: 600;
}

.ftkit-run-meta {
  margin-top: 2px;
  color: var(--jp-ui-font-color2);
  font-size: var(--jp-ui-font-size0);
  overflow: hidden;
  text-overflow: ellipsis;
  white-space: nowrap;
}

.ftkit-run-actions {
  display: flex;
  flex-wrap: wrap;
  gap: 4px;
  margin-top: 6px;
}

.ftkit-button {
  padding: 2px 5px;
  border: var(--jp-border-width) solid var(--jp-border-color1);
  border-radius: var(--jp-border-radius);
  background: var(--jp-layout-color1);
  color: var(--jp-ui-font-color1);
  font-size: var(--jp-ui-font-size0);
  cursor: pointer;
}

.ftkit-button:hover:not(:disabled) {
  background: var(--jp-layout-color2);
}

.ftkit-button:disabled {
  opacity: 0.5;
  cursor: default;
}

.ftkit-button.ftkit-stop:not(:disabled) {
  border-color: var(--jp-error-color1);
  color: var(--jp-error-color1);
}

.ftkit-button.ftkit-compare-selected:not(:disabled) {
  background: var(--jp-brand-color1);
  border-color: var(--jp-brand-color1);
  color: white;
}

.ftkit-refresh {
  border: none;
  font-size: var(--jp-ui-font-size2);
}

.ftkit-report {
  display: flex;
  flex-direction: column;
  height: 100%;
}

.ftkit-report-note {
  padding: 8px 12px;
  color: var(--jp-ui-font-color2);
}

.ftkit-report-frame {
  flex: 1 1 auto;
  width: 100%;
  border: none;
  background: white;
}
`,""]),e.d(r,{},{A:a})},314(t){t.exports=function(t){var r=[];return r.toString=function(){return this.map(function(r){var e="",o=void 0!==r[5];return r[4]&&(e+="@supports (".concat(r[4],") {")),r[2]&&(e+="@media ".concat(r[2]," {")),o&&(e+="@layer".concat(r[5].length>0?" ".concat(r[5]):""," {")),e+=t(r),o&&(e+="}"),r[2]&&(e+="}"),r[4]&&(e+="}"),e}).join("")},r.i=function(t,e,o,n,i){"string"==typeof t&&(t=[[null,t,void 0]]);var a={};if(o)for(var s=0;s<this.length;s++){var p=this[s][0];null!=p&&(a[p]=!0)}for(var c=0;c<t.length;c++){var l=[].concat(t[c]);o&&a[l[0]]||(void 0!==i&&(void 0===l[5]||(l[1]="@layer".concat(l[5].length>0?" ".concat(l[5]):""," {").concat(l[1],"}")),l[5]=i),e&&(l[2]&&(l[1]="@media ".concat(l[2]," {").concat(l[1],"}")),l[2]=e),n&&(l[4]?(l[1]="@supports (".concat(l[4],") {").concat(l[1],"}"),l[4]=n):l[4]="".concat(n)),r.push(l))}},r}},601(t){t.exports=function(t){return t[1]}},72(t){var r=[];function e(t){for(var e=-1,o=0;o<r.length;o++)if(r[o].identifier===t){e=o;break}return e}function o(t,o){for(var n={},i=[],a=0;a<t.length;a++){var s=t[a],p=o.base?s[0]+o.base:s[0],c=n[p]||0,l="".concat(p," ").concat(c);n[p]=c+1;var u=e(l),d={css:s[1],media:s[2],sourceMap:s[3],supports:s[4],layer:s[5]};if(-1!==u)r[u].references++,r[u].updater(d);else{var f=function(t,r){var e=r.domAPI(r);return e.update(t),function(r){r?(r.css!==t.css||r.media!==t.media||r.sourceMap!==t.sourceMap||r.supports!==t.supports||r.layer!==t.layer)&&e.update(t=r):e.remove()}}(d,o);o.byIndex=a,r.splice(a,0,{identifier:l,updater:f,references:1})}i.push(l)}return i}t.exports=function(t,n){var i=o(t=t||[],n=n||{});return function(t){t=t||[];for(var a=0;a<i.length;a++){var s=e(i[a]);r[s].references--}for(var p=o(t,n),c=0;c<i.length;c++){var l=e(i[c]);0===r[l].references&&(r[l].updater(),r.splice(l,1))}i=p}}},659(t){var r={};t.exports=function(t,e){var o=function(t){if(void 0===r[t]){var e=document.querySelector(t);if(window.HTMLIFrameElement&&e instanceof window.HTMLIFrameElement)try{e=e.contentDocument.head}catch(t){e=null}r[t]=e}return r[t]}(t);if(!o)throw Error("Couldn't find a style target. This probably means that the value for the 'insert' parameter is invalid.");o.appendChild(e)}},540(t){t.exports=function(t){var r=document.createElement("style");return t.setAttributes(r,t.attributes),t.insert(r,t.options),r}},56(t,r,e){t.exports=function(t){var r=e.nc;r&&t.setAttribute("nonce",r)}},825(t){t.exports=function(t){if("u"<typeof document)return{update:function(){},remove:function(){}};var r=t.insertStyleElement(t);return{update:function(e){var o,n,i;o="",e.supports&&(o+="@supports (".concat(e.supports,") {")),e.media&&(o+="@media ".concat(e.media," {")),(n=void 0!==e.layer)&&(o+="@layer".concat(e.layer.length>0?" ".concat(e.layer):""," {")),o+=e.css,n&&(o+="}"),e.media&&(o+="}"),e.supports&&(o+="}"),(i=e.sourceMap)&&"u">typeof btoa&&(o+="\n/*# sourceMappingURL=data:application/json;base64,".concat(btoa(unescape(encodeURIComponent(JSON.stringify(i))))," */")),t.styleTagTransform(o,r,t.options)},remove:function(){var t;null===(t=r).parentNode||t.parentNode.removeChild(t)}}}},113(t){t.exports=function(t,r){if(r.styleSheet)r.styleSheet.cssText=t;else{for(;r.firstChild;)r.removeChild(r.firstChild);r.appendChild(document.createTextNode(t))}}},579(t,r,e){var o=e(72),n=e.n(o),i=e(825),a=e.n(i),s=e(659),p=e.n(s),c=e(56),l=e.n(c),u=e(540),d=e.n(u),f=e(113),v=e.n(f),b=e(475),h={};h.styleTagTransform=v(),h.setAttributes=l(),h.insert=p().bind(null,"head"),h.domAPI=a(),h.insertStyleElement=d(),n()(b.A,h),b.A&&b.A.locals&&b.A.locals}}]);