import { LabIcon } from '@jupyterlab/ui-components';

// A falling loss curve over a baseline: what the sidebar watches.
const svgstr = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16" height="16">
  <path class="jp-icon3" style="fill:none" stroke="#616161" stroke-width="2" stroke-linecap="round" stroke-linejoin="round"
    d="M3 4 C6 14, 9 16, 13 17 S19 18, 21 18"/>
  <path class="jp-icon3" style="fill:none" stroke="#616161" stroke-width="1.5" stroke-linecap="round" d="M3 21 H21"/>
</svg>`;

export const ftkitIcon = new LabIcon({ name: 'ftkit-labextension:runs', svgstr });
