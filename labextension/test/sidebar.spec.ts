import { Widget } from '@lumino/widgets';

import { REPORT_SANDBOX, ReportView } from '../src/report';
import { ISidebarActions, RunsSidebar } from '../src/sidebar';
import { run } from './fixtures';

function actions(): jest.Mocked<Required<ISidebarActions>> {
  return {
    openReport: jest.fn(),
    insertLoadRun: jest.fn(),
    stop: jest.fn(async (_run: any) => undefined),
    compare: jest.fn(async (_ids: string[]) => undefined),
    refresh: jest.fn(),
    visibility: jest.fn()
  };
}

function mounted(acts = actions()) {
  const sidebar = new RunsSidebar(acts);
  Widget.attach(sidebar, document.body);
  return { sidebar, acts, q: (s: string) => sidebar.node.querySelector(s) as HTMLElement };
}

const live = run({ id: 'r-live', name: 'live', status: 'running', step: 3, max_steps: 200, metric: null, started: 200 });
const old = run({ id: 'r-old', name: 'old', status: 'completed', started: 100 });

describe('RunsSidebar', () => {
  afterEach(() => {
    document.body.innerHTML = '';
  });

  it('lists the runs, running first, each with its badge, sparkline, figures and actions', () => {
    const { sidebar, q } = mounted();
    sidebar.setRuns({ runs_dir: '/data/runs', runs: [old, live] });
    const rows = Array.from(sidebar.node.querySelectorAll('.ftkit-run')) as HTMLElement[];
    expect(rows.map(r => r.dataset.runId)).toEqual(['r-live', 'r-old']);
    expect(rows[0].querySelector('.ftkit-badge')!.textContent).toBe('running');
    expect(rows[0].querySelector('.ftkit-badge')!.className).toContain('ftkit-badge-running');
    expect(rows[0].querySelector('.ftkit-run-progress')!.textContent).toBe('step 3 / 200');
    expect(rows[0].querySelector('.ftkit-sparkline path')!.getAttribute('d')).toMatch(/^M[\d.]+ [\d.]+(L[\d.]+ [\d.]+){2}$/);
    expect((rows[0].querySelector('.ftkit-sparkline') as HTMLElement).dataset.points).toBe('3');
    expect(rows[1].querySelector('.ftkit-run-metric')!.textContent).toBe('exact_match 0.813');
    expect(rows[1].querySelector('.ftkit-badge')!.textContent).toBe('completed');
    expect(q('.ftkit-runs-where').textContent).toBe('runs folder: /data/runs');
  });

  it('enables Stop only on a running run', () => {
    const { sidebar } = mounted();
    sidebar.setRuns({ runs_dir: 'runs', runs: [old, live] });
    expect((sidebar.rowNode('r-live')!.querySelector('.ftkit-stop') as HTMLButtonElement).disabled).toBe(false);
    expect((sidebar.rowNode('r-old')!.querySelector('.ftkit-stop') as HTMLButtonElement).disabled).toBe(true);
  });

  it('updates rows in place, so the sparkline grows on the same element', () => {
    const { sidebar } = mounted();
    sidebar.setRuns({ runs_dir: 'runs', runs: [live] });
    const row = sidebar.rowNode('r-live')!;
    const path = row.querySelector('.ftkit-sparkline path')!;
    const before = path.getAttribute('d')!;
    sidebar.setRuns({ runs_dir: 'runs', runs: [{ ...live, step: 4, loss: [...live.loss, [4, 1.2]] }] });
    expect(sidebar.rowNode('r-live')).toBe(row);
    expect(path.getAttribute('d')!.split('L').length).toBe(before.split('L').length + 1);
    expect((row.querySelector('.ftkit-sparkline') as HTMLElement).dataset.lastStep).toBe('4');
    expect(row.querySelector('.ftkit-run-progress')!.textContent).toBe('step 4 / 200');
  });

  it('removes a run that is gone, and its selection', () => {
    const { sidebar } = mounted();
    sidebar.setRuns({ runs_dir: 'runs', runs: [old, live] });
    (sidebar.rowNode('r-old')!.querySelector('.ftkit-run-select') as HTMLInputElement).click();
    expect(sidebar.selected.has('r-old')).toBe(true);
    sidebar.setRuns({ runs_dir: 'runs', runs: [live] });
    expect(sidebar.rowNode('r-old')).toBeUndefined();
    expect(sidebar.selected.size).toBe(0);
  });

  it('calls the actions with the row\'s run', () => {
    const { sidebar, acts } = mounted();
    sidebar.setRuns({ runs_dir: 'runs', runs: [old] });
    const row = sidebar.rowNode('r-old')!;
    (row.querySelector('.ftkit-open-report') as HTMLButtonElement).click();
    (row.querySelector('.ftkit-insert-load-run') as HTMLButtonElement).click();
    expect(acts.openReport).toHaveBeenCalledWith(old);
    expect(acts.insertLoadRun).toHaveBeenCalledWith(old);
  });

  it('stops a running run once, shows it stopping, and shows a 409 as an error', async () => {
    const acts = actions();
    acts.stop.mockRejectedValueOnce(new Error('run r-live is not running'));
    const { sidebar, q } = mounted(acts);
    sidebar.setRuns({ runs_dir: 'runs', runs: [live] });
    const stop = sidebar.rowNode('r-live')!.querySelector('.ftkit-stop') as HTMLButtonElement;
    stop.click();
    expect(stop.disabled).toBe(true);
    await Promise.resolve();
    await Promise.resolve();
    expect(q('.ftkit-runs-status').textContent).toContain('not running');
    expect(q('.ftkit-runs-status').classList).toContain('ftkit-mod-error');
    expect(stop.disabled).toBe(false);

    stop.click();
    expect(sidebar.rowNode('r-live')!.querySelector('.ftkit-badge')!.textContent).toBe('stopping');
    await Promise.resolve();
    expect(acts.stop).toHaveBeenCalledTimes(2);
    sidebar.setRuns({ runs_dir: 'runs', runs: [{ ...live, status: 'stopped' }] });
    expect(sidebar.rowNode('r-live')!.querySelector('.ftkit-badge')!.textContent).toBe('stopped');
    expect(stop.disabled).toBe(true);
  });

  it('shows a stop asked elsewhere (the listing says stop_requested) as stopping, with Stop off', () => {
    const { sidebar } = mounted();
    sidebar.setRuns({ runs_dir: 'runs', runs: [{ ...live, stop_requested: true }] });
    const row = sidebar.rowNode('r-live')!;
    expect(row.querySelector('.ftkit-badge')!.textContent).toBe('stopping');
    expect((row.querySelector('.ftkit-stop') as HTMLButtonElement).disabled).toBe(true);
  });

  it('compares the ticked runs in list order; the button is off with nothing ticked', async () => {
    const { sidebar, acts, q } = mounted();
    const third = run({ id: 'r-mid', name: 'mid', started: 150 });
    sidebar.setRuns({ runs_dir: 'runs', runs: [old, third, live] });
    const compare = q('.ftkit-compare-selected') as HTMLButtonElement;
    expect(compare.disabled).toBe(true);
    for (const id of ['r-old', 'r-live']) {
      (sidebar.rowNode(id)!.querySelector('.ftkit-run-select') as HTMLInputElement).click();
    }
    expect(compare.disabled).toBe(false);
    expect(compare.textContent).toBe('Compare selected (2)');
    compare.click();
    await Promise.resolve();
    expect(acts.compare).toHaveBeenCalledWith(['r-live', 'r-old']);
  });

  it('keeps a ticked box ticked across polls', () => {
    const { sidebar } = mounted();
    sidebar.setRuns({ runs_dir: 'runs', runs: [live] });
    const box = sidebar.rowNode('r-live')!.querySelector('.ftkit-run-select') as HTMLInputElement;
    box.click();
    sidebar.setRuns({ runs_dir: 'runs', runs: [{ ...live, step: 5 }] });
    expect(box.checked).toBe(true);
  });

  it('says what to do when there are no runs, and shows errors until a poll succeeds', () => {
    const { sidebar, q } = mounted();
    sidebar.setRuns({ runs_dir: 'runs', runs: [] });
    expect(q('.ftkit-runs-status').textContent).toContain('No runs yet');
    sidebar.showError('Cannot list runs: 500');
    expect(q('.ftkit-runs-status').classList).toContain('ftkit-mod-error');
    sidebar.setRuns({ runs_dir: 'runs', runs: [live] });
    expect(q('.ftkit-runs-status').textContent).toBe('');
  });

  it('tells the plugin when it is shown and hidden (polling follows), and when it starts out visible', () => {
    const { sidebar, acts } = mounted();
    expect(acts.visibility.mock.calls).toEqual([[true]]);
    sidebar.hide();
    sidebar.show();
    expect(acts.visibility.mock.calls).toEqual([[true], [false], [true]]);
  });

  it('does not ask for polls when attached hidden', () => {
    const acts = actions();
    const sidebar = new RunsSidebar(acts);
    sidebar.hide();
    Widget.attach(sidebar, document.body);
    expect(acts.visibility).not.toHaveBeenCalled();
  });

  it('refreshes on the refresh button', () => {
    const { acts, q } = mounted();
    (q('.ftkit-refresh') as HTMLButtonElement).click();
    expect(acts.refresh).toHaveBeenCalled();
  });
});

describe('ReportView', () => {
  it('shows the report in a sandboxed srcdoc iframe: scripts for the charts, no same origin', () => {
    const view = new ReportView('r1');
    view.setHtml('<html><body><div id="chart"></div><script>1</script></body></html>');
    expect(view.iframe.getAttribute('sandbox')).toBe(REPORT_SANDBOX);
    expect(REPORT_SANDBOX.split(' ')).toEqual(['allow-scripts']);
    expect(view.iframe.srcdoc).toContain('<div id="chart">');
    expect(view.iframe.getAttribute('src')).toBeNull();
  });

  it('shows an error instead of the report', () => {
    const view = new ReportView('r1');
    view.showError('Cannot load the report of r1: 404');
    expect(view.node.textContent).toContain('Cannot load the report of r1: 404');
  });
});
