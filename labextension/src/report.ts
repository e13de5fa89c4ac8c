/**
 * A run's report in a main-area tab. The page is fetched through the REST API (with the
 * server's token, like every other request) and shown in an iframe's `srcdoc`, so the URL never
 * carries a token. The frame is sandboxed with scripts allowed (the report draws its charts with
 * plotly.js, inlined in the page) but not same-origin: its scripts run in an opaque origin and
 * cannot reach JupyterLab, its cookies or the server's API.
 */

import { Widget } from '@lumino/widgets';

/** Scripts for the charts; nothing else (no same-origin, forms, popups or top navigation). */
export const REPORT_SANDBOX = 'allow-scripts';

export class ReportView extends Widget {
  readonly iframe: HTMLIFrameElement;
  private readonly note: HTMLDivElement;

  constructor(readonly runId: string) {
    super();
    this.addClass('ftkit-report');
    this.note = document.createElement('div');
    this.note.className = 'ftkit-report-note';
    this.note.textContent = `Loading the report of ${runId}…`;
    this.iframe = document.createElement('iframe');
    this.iframe.className = 'ftkit-report-frame';
    this.iframe.setAttribute('sandbox', REPORT_SANDBOX);
    this.iframe.setAttribute('referrerpolicy', 'no-referrer');
    this.iframe.title = `ftkit report: ${runId}`;
    this.node.append(this.note, this.iframe);
  }

  /** Show the report's HTML (as the server sent it). */
  setHtml(html: string): void {
    this.note.textContent = '';
    this.note.hidden = true;
    this.iframe.srcdoc = html;
  }

  showError(message: string): void {
    this.note.hidden = false;
    this.note.textContent = message;
    this.note.classList.add('ftkit-mod-error');
  }
}
