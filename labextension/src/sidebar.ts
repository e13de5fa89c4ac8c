/**
 * The "Fine-tuning runs" sidebar: one row per run with its status badge, a loss sparkline, the
 * headline metric and step / max_steps, and its actions. Rows are updated in place on every poll
 * (never rebuilt), so a click, a ticked checkbox or the keyboard focus survive the refresh.
 */

import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  formatLastLoss,
  formatMetric,
  formatProgress,
  IRunSummary,
  IRunsResponse,
  isActive,
  sortRuns,
  sparklinePath,
  statusBadge
} from './model';

export const SPARK_WIDTH = 120;
export const SPARK_HEIGHT = 28;
const SVG_NS = 'http://www.w3.org/2000/svg';

export interface ISidebarActions {
  openReport(run: IRunSummary): void | Promise<void>;
  insertLoadRun(run: IRunSummary): void | Promise<void>;
  stop(run: IRunSummary): Promise<void>;
  compare(ids: string[]): Promise<void>;
  refresh(): void | Promise<void>;
  /** the sidebar was shown (true) or hidden (false): poll only while someone looks */
  visibility?(visible: boolean): void;
}

interface IRow {
  li: HTMLLIElement;
  check: HTMLInputElement;
  name: HTMLSpanElement;
  badge: HTMLSpanElement;
  svg: SVGSVGElement;
  path: SVGPathElement;
  progress: HTMLSpanElement;
  loss: HTMLSpanElement;
  metric: HTMLSpanElement;
  meta: HTMLDivElement;
  stop: HTMLButtonElement;
  run: IRunSummary;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, text = ''): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text) {
    node.textContent = text;
  }
  return node;
}

function button(className: string, label: string, title: string, onClick: () => void): HTMLButtonElement {
  const b = el('button', `ftkit-button ${className}`, label);
  b.type = 'button';
  b.title = title;
  b.addEventListener('click', event => {
    event.stopPropagation();
    onClick();
  });
  return b;
}

/** "2026-11-26 13:45", in the browser's time zone; '' without a time. */
export function formatStarted(seconds: number): string {
  if (!seconds) {
    return '';
  }
  const d = new Date(seconds * 1000);
  const two = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ${two(d.getHours())}:${two(d.getMinutes())}`;
}

export class RunsSidebar extends Widget {
  readonly selected = new Set<string>();
  private readonly rows = new Map<string, IRow>();
  private readonly stopping = new Set<string>();
  private readonly list: HTMLUListElement;
  private readonly status: HTMLDivElement;
  private readonly where: HTMLDivElement;
  private readonly compareButton: HTMLButtonElement;
  private runs: IRunSummary[] = [];
  private loaded = false;

  constructor(private readonly actions: ISidebarActions) {
    super();
    this.addClass('ftkit-runs-sidebar');
    const header = el('div', 'ftkit-runs-header');
    header.appendChild(el('h2', 'ftkit-runs-title', 'Fine-tuning runs'));
    header.appendChild(
      button('ftkit-refresh', '⟳', 'Refresh the list now', () => void this.actions.refresh())
    );
    const toolbar = el('div', 'ftkit-runs-toolbar');
    this.compareButton = button(
      'ftkit-compare-selected',
      'Compare selected',
      'A new notebook in the current folder that loads the ticked runs into a ComparePanel',
      () => void this.compareSelected()
    );
    toolbar.appendChild(this.compareButton);
    this.where = el('div', 'ftkit-runs-where');
    this.status = el('div', 'ftkit-runs-status');
    this.status.setAttribute('role', 'status');
    this.list = el('ul', 'ftkit-runs-list');
    for (const part of [header, toolbar, this.status, this.list, this.where]) {
      this.node.appendChild(part);
    }
    this.updateCompareButton();
    this.showMessage('Loading runs…');
  }

  /** Show what the server listed. */
  setRuns(response: IRunsResponse): void {
    this.loaded = true;
    this.runs = sortRuns(response.runs || []);
    this.where.textContent = response.runs_dir ? `runs folder: ${response.runs_dir}` : '';
    this.where.title = response.runs_dir || '';
    const ids = new Set(this.runs.map(r => r.id));
    for (const [id, row] of this.rows) {
      if (!ids.has(id)) {
        row.li.remove();
        this.rows.delete(id);
        this.selected.delete(id);
      }
    }
    this.runs.forEach((run, index) => {
      let row = this.rows.get(run.id);
      if (!row) {
        row = this.createRow(run);
        this.rows.set(run.id, row);
      }
      this.fillRow(row, run);
      // Move a row only when its place changed: moving the node under the pointer would eat a click.
      if (this.list.children[index] !== row.li) {
        this.list.insertBefore(row.li, this.list.children[index] ?? null);
      }
    });
    if (this.runs.length === 0) {
      this.showMessage(
        'No runs yet. Train from a notebook (TrainPanel, train_sft) and the run appears here with its live loss.'
      );
    } else if (this.status.classList.contains('ftkit-mod-error') || this.status.dataset.kind === 'info') {
      this.showMessage('');
    }
    this.updateCompareButton();
  }

  /** An error in the status line (the list keeps what it last showed). */
  showError(message: string): void {
    this.status.textContent = message;
    this.status.classList.add('ftkit-mod-error');
    this.status.dataset.kind = 'error';
  }

  /** A note in the status line; '' clears it. */
  showMessage(message: string): void {
    this.status.textContent = message;
    this.status.classList.remove('ftkit-mod-error');
    this.status.dataset.kind = message ? 'info' : '';
  }

  get hasLoaded(): boolean {
    return this.loaded;
  }

  /** The row element of a run, for tests and for scrolling it into view. */
  rowNode(id: string): HTMLLIElement | undefined {
    return this.rows.get(id)?.li;
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    // Restored open at start-up, the sidebar is attached visible and never "shown".
    if (this.isVisible) {
      this.actions.visibility?.(true);
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this.actions.visibility?.(true);
  }

  protected onAfterHide(msg: Message): void {
    super.onAfterHide(msg);
    this.actions.visibility?.(false);
  }

  private async compareSelected(): Promise<void> {
    // In the order the list shows them: the first is the one whose base model the notebook loads.
    const ids = this.runs.map(r => r.id).filter(id => this.selected.has(id));
    if (ids.length === 0) {
      this.showError('Tick the runs to compare first.');
      return;
    }
    this.compareButton.disabled = true;
    try {
      await this.actions.compare(ids);
    } catch (error) {
      this.showError(`Compare failed: ${(error as Error).message ?? error}`);
    } finally {
      this.updateCompareButton();
    }
  }

  private updateCompareButton(): void {
    const n = this.selected.size;
    this.compareButton.disabled = n === 0;
    this.compareButton.textContent = n ? `Compare selected (${n})` : 'Compare selected';
  }

  private createRow(run: IRunSummary): IRow {
    const li = el('li', 'ftkit-run');
    li.dataset.runId = run.id;
    const head = el('div', 'ftkit-run-head');
    const check = el('input', 'ftkit-run-select');
    check.type = 'checkbox';
    check.title = 'Select for "Compare selected"';
    check.addEventListener('change', () => {
      if (check.checked) {
        this.selected.add(run.id);
      } else {
        this.selected.delete(run.id);
      }
      this.updateCompareButton();
    });
    const name = el('span', 'ftkit-run-name');
    const badge = el('span', 'ftkit-badge');
    head.append(check, name, badge);

    const body = el('div', 'ftkit-run-body');
    const svg = document.createElementNS(SVG_NS, 'svg') as SVGSVGElement;
    svg.setAttribute('class', 'ftkit-sparkline');
    svg.setAttribute('viewBox', `0 0 ${SPARK_WIDTH} ${SPARK_HEIGHT}`);
    svg.setAttribute('width', String(SPARK_WIDTH));
    svg.setAttribute('height', String(SPARK_HEIGHT));
    svg.setAttribute('role', 'img');
    const path = document.createElementNS(SVG_NS, 'path') as SVGPathElement;
    path.setAttribute('class', 'ftkit-sparkline-line');
    svg.appendChild(path);
    const figures = el('div', 'ftkit-run-figures');
    const progress = el('span', 'ftkit-run-progress');
    const loss = el('span', 'ftkit-run-loss');
    const metric = el('span', 'ftkit-run-metric');
    figures.append(progress, loss, metric);
    body.append(svg, figures);

    const meta = el('div', 'ftkit-run-meta');
    const actions = el('div', 'ftkit-run-actions');
    const row = { li, check, name, badge, svg, path, progress, loss, metric, meta, run } as IRow;
    const report = button('ftkit-open-report', 'Open report', 'Open the run\'s report in a tab', () =>
      void this.actions.openReport(row.run)
    );
    const insert = button(
      'ftkit-insert-load-run',
      'Insert load_run',
      'Insert `run = load_run(...)` for this run below the active cell of the current notebook',
      () => void this.actions.insertLoadRun(row.run)
    );
    row.stop = button('ftkit-stop', 'Stop', 'Stop this run after its current step (its adapter is saved)', () =>
      void this.stopRun(row)
    );
    actions.append(report, insert, row.stop);
    li.append(head, body, meta, actions);
    return row;
  }

  private fillRow(row: IRow, run: IRunSummary): void {
    row.run = run;
    if (!isActive(run)) {
      this.stopping.delete(run.id);
    }
    // Asked here or anywhere else (another browser, `run.request_stop()` in a kernel).
    const stopping = isActive(run) && (this.stopping.has(run.id) || !!run.stop_requested);
    row.li.dataset.status = run.status;
    row.name.textContent = run.name || run.id;
    row.name.title = run.id;
    const badge = statusBadge(run.status);
    row.badge.className = badge.className;
    row.badge.textContent = stopping ? 'stopping' : badge.label;
    row.badge.title = run.error ? `the server could not read this run: ${run.error}` : badge.title;
    const d = sparklinePath(run.loss, SPARK_WIDTH, SPARK_HEIGHT);
    row.path.setAttribute('d', d);
    const points = (run.loss || []).length;
    const lastStep = points ? run.loss[points - 1][0] : 0;
    row.svg.dataset.points = String(points);
    row.svg.dataset.lastStep = String(lastStep);
    row.svg.setAttribute('aria-label', points ? `training loss over the last ${points} logged steps` : 'no loss logged yet');
    row.progress.textContent = formatProgress(run);
    row.loss.textContent = formatLastLoss(run.loss);
    row.metric.textContent = formatMetric(run.metric);
    row.metric.title = run.metric ? `${run.metric.name} of ${run.metric.variant} on the held-out rows` : '';
    const device = (run.device || '').split(':')[0];
    row.meta.textContent = [run.kind, device, formatStarted(run.started)].filter(Boolean).join(' · ');
    row.meta.title = run.device || '';
    row.check.checked = this.selected.has(run.id);
    row.stop.disabled = !isActive(run) || stopping;
  }

  private async stopRun(row: IRow): Promise<void> {
    const id = row.run.id;
    this.stopping.add(id);
    this.fillRow(row, row.run);
    try {
      await this.actions.stop(row.run);
      this.showMessage(`Stop requested for ${row.run.name || id}: it ends after its current step.`);
    } catch (error) {
      this.stopping.delete(id);
      this.fillRow(row, row.run);
      this.showError(`Could not stop ${id}: ${(error as Error).message ?? error}`);
    }
  }
}
