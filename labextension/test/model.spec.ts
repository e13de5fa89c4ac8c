import {
  compareNotebook,
  DEFAULT_SETTINGS,
  FILL_IN_TAG,
  formatLastLoss,
  formatMetric,
  formatProgress,
  freeName,
  joinPath,
  loadRunSnippet,
  nextPollDelay,
  sortRuns,
  sparklinePath,
  starterNotebook,
  statusBadge
} from '../src/model';
import { run } from './fixtures';

describe('sortRuns', () => {
  it('puts running runs first, then the newest, with the id breaking ties', () => {
    const runs = [
      run({ id: 'a-old', started: 100, status: 'completed' }),
      run({ id: 'b-new', started: 300, status: 'failed' }),
      run({ id: 'c-running', started: 50, status: 'running' }),
      run({ id: 'd-same', started: 300, status: 'stopped' })
    ];
    expect(sortRuns(runs).map(r => r.id)).toEqual(['c-running', 'd-same', 'b-new', 'a-old']);
  });

  it('does not change the list it is given', () => {
    const runs = [run({ id: 'x', started: 1 }), run({ id: 'y', started: 2 })];
    sortRuns(runs);
    expect(runs.map(r => r.id)).toEqual(['x', 'y']);
  });
});

describe('statusBadge', () => {
  it.each(['running', 'completed', 'stopped', 'failed', 'interrupted'])('gives %s its own class', status => {
    const badge = statusBadge(status);
    expect(badge.label).toBe(status);
    expect(badge.className).toBe(`ftkit-badge ftkit-badge-${status}`);
    expect(badge.title.length).toBeGreaterThan(10);
  });

  it('reads anything else as unknown, naming what it got', () => {
    const badge = statusBadge('exploded');
    expect(badge.label).toBe('unknown');
    expect(badge.className).toBe('ftkit-badge ftkit-badge-unknown');
    expect(badge.title).toContain('exploded');
  });

  it('tells how to continue an interrupted run', () => {
    expect(statusBadge('interrupted').title).toContain('resume');
  });
});

describe('sparklinePath', () => {
  it('spans the box: first step left, last right, highest loss on top', () => {
    // width 100, height 20, pad 0: x = (step - 1) / 2 * 100, y = 20 - (loss - 1) / 2 * 20
    expect(sparklinePath([[1, 3], [2, 2], [3, 1]], 100, 20, 0)).toBe('M0 0L50 10L100 20');
  });

  it('keeps the padding free at every edge', () => {
    expect(sparklinePath([[0, 1], [10, 0]], 104, 24, 2)).toBe('M2 2L102 22');
  });

  it('scales steps by their value, not their index (a resumed run can skip steps)', () => {
    expect(sparklinePath([[0, 2], [1, 1], [4, 0]], 40, 10, 0)).toBe('M0 0L10 5L40 10');
  });

  it('draws a flat loss in the middle and one point as a flat line', () => {
    expect(sparklinePath([[1, 0.5], [2, 0.5]], 100, 20, 0)).toBe('M0 10L100 10');
    expect(sparklinePath([[7, 1.2]], 100, 20, 2)).toBe('M2 10L98 10');
  });

  it('draws nothing without points and skips non-finite losses', () => {
    expect(sparklinePath([], 100, 20)).toBe('');
    expect(sparklinePath(undefined as any, 100, 20)).toBe('');
    expect(sparklinePath([[1, 2], [2, NaN], [3, 0]], 100, 20, 0)).toBe('M0 0L100 20');
  });

  it('grows by one command per new point', () => {
    const points: Array<[number, number]> = [[1, 3], [2, 2.5]];
    const before = sparklinePath(points).split('L').length;
    const after = sparklinePath([...points, [3, 2.2]]).split('L').length;
    expect(after).toBe(before + 1);
  });

  it('rounds to a tenth of a pixel', () => {
    expect(sparklinePath([[0, 0], [3, 1]], 10, 10, 0)).toBe('M0 10L10 0');
    expect(sparklinePath([[0, 0], [1, 1], [3, 2]], 10, 10, 0)).toBe('M0 10L3.3 5L10 0');
  });
});

describe('figures', () => {
  it('shows step / max_steps, or the step alone without a limit', () => {
    expect(formatProgress({ step: 12, max_steps: 200 })).toBe('step 12 / 200');
    expect(formatProgress({ step: 12, max_steps: -1 })).toBe('step 12');
    expect(formatProgress({ step: 3, max_steps: null as any })).toBe('step 3'); // the server sends null when unknown
  });

  it('shows the headline metric, or nothing for a run never evaluated', () => {
    expect(formatMetric({ name: 'exact_match', variant: 'x', value: 0.8125 })).toBe('exact_match 0.813');
    expect(formatMetric({ name: 'chrf', variant: 'x', value: 54.321 })).toBe('chrf 54.3');
    expect(formatMetric(null)).toBe('');
  });

  it('shows the last finite loss', () => {
    expect(formatLastLoss([[1, 2], [2, 0.41234]])).toBe('loss 0.4123');
    expect(formatLastLoss([])).toBe('');
  });
});

describe('nextPollDelay', () => {
  const settings = { ...DEFAULT_SETTINGS };

  it('polls every 2 s by default while any run is running', () => {
    expect(nextPollDelay([run({ status: 'completed' }), run({ status: 'running' })], settings)).toBe(2000);
  });

  it('polls slower when none is running', () => {
    expect(nextPollDelay([run({ status: 'completed' }), run({ status: 'interrupted' })], settings)).toBe(15000);
    expect(nextPollDelay([], settings)).toBe(15000);
  });

  it('stops when none is running and pollOnlyWhileActive is set', () => {
    const only = { ...settings, pollOnlyWhileActive: true };
    expect(nextPollDelay([run({ status: 'stopped' })], only)).toBeNull();
    expect(nextPollDelay([run({ status: 'running' })], only)).toBe(2000);
  });

  it('follows the settings, never faster than twice a second nor idle faster than active', () => {
    expect(nextPollDelay([run({ status: 'running' })], { ...settings, interval: 5 })).toBe(5000);
    expect(nextPollDelay([run({ status: 'running' })], { ...settings, interval: 0 })).toBe(500);
    expect(nextPollDelay([], { ...settings, interval: 5, idleInterval: 1 })).toBe(5000);
  });

  it('waits the idle interval after a failed poll, even with pollOnlyWhileActive', () => {
    expect(nextPollDelay([run({ status: 'running' })], settings, true)).toBe(15000);
    expect(nextPollDelay([], { ...settings, pollOnlyWhileActive: true }, true)).toBe(15000);
  });
});

describe('loadRunSnippet', () => {
  it('is the import and the load_run call for the run', () => {
    expect(loadRunSnippet('20261126-101500-support-sft')).toBe(
      'from ftkit.runs import load_run\nrun = load_run("20261126-101500-support-sft")'
    );
  });

  it('escapes the id as a Python string', () => {
    expect(loadRunSnippet('a"b\\c')).toBe('from ftkit.runs import load_run\nrun = load_run("a\\"b\\\\c")');
  });
});

describe('compareNotebook', () => {
  const detail = (id: string, config: any = {}) => ({
    id,
    config: { kind: 'sft', base_model: 'smollm2-135m-instruct', ...config },
    status: { status: 'completed' },
    evaluation: null
  });
  const sources = (nb: ReturnType<typeof compareNotebook>) => nb.cells.map(c => c.source).join('\n');

  it('loads every selected run, the first run\'s base model, and builds a ComparePanel over them', () => {
    const nb = compareNotebook([detail('run-a'), detail('run-b')], '/home/me/runs');
    const text = sources(nb);
    expect(text).toContain('from ftkit.runs import load_run');
    expect(text).toContain('from ftkit.widgets import ComparePanel');
    expect(text).toContain('RUNS_ROOT = "/home/me/runs"');
    expect(text).toContain('    load_run("run-a", root=RUNS_ROOT),\n    load_run("run-b", root=RUNS_ROOT),');
    expect(text).toContain('model, tokenizer = load_model(runs[0].config["base_model"])');
    expect(text).toContain('compare = ComparePanel(model, tokenizer, dataset=held_out, runs=runs)');
    expect(nb.cells[nb.cells.length - 1].source.split('\n').pop()).toBe('compare');
    expect(nb.nbformat).toBe(4);
    expect(nb.metadata.kernelspec.name).toBe('python3');
  });

  it('asks for the held-out rows in a marked cell when the runs did not record their data', () => {
    const nb = compareNotebook([detail('run-a')], 'runs');
    const fill = nb.cells.filter(c => (c.metadata.tags || []).includes(FILL_IN_TAG));
    expect(fill).toHaveLength(1);
    expect(fill[0].cell_type).toBe('code');
    expect(fill[0].source).toContain('FILL IN');
    expect(fill[0].source.split('\n').pop()).toBe('held_out = None');
    expect(sources(nb)).toContain('if held_out is None:\n    raise ValueError(');
  });

  it("uses the data source the run's config records", () => {
    const nb = compareNotebook(
      [detail('run-a', { data: { source: 'support_routing', test_size: 0.25, seed: 3, stratify_by: 'label' } })],
      'runs'
    );
    const text = sources(nb);
    expect(nb.cells.some(c => (c.metadata.tags || []).includes(FILL_IN_TAG))).toBe(false);
    expect(text).toContain('SOURCE = "support_routing"');
    expect(text).toContain('examples.load(SOURCE) if SOURCE in examples.names() else load_data(SOURCE)');
    expect(text).toContain('held_out = split(data, test_size=0.25, seed=3, stratify_by="label")["test"]');
  });

  const record = (over: any = {}) => ({
    version: 1,
    source: 'tickets.csv',
    example: null,
    path: '/home/me/tickets.csv',
    sha256: 'ab'.repeat(32),
    reproducible: true,
    test_size: 0.2,
    seed: 0,
    stratify_by: 'label',
    group_by: null,
    limit: 48,
    train_limit: 0,
    train_rows: 384,
    test_rows: 96,
    evaluated_rows: 48,
    held_out_sha256: 'cd'.repeat(32),
    task: 'classification',
    ...over
  });
  const withData = (id: string, data: any, config: any = {}) => ({ ...detail(id, config), data });

  it("loads the held-out rows from the run's data record, with no cell to fill in", () => {
    const nb = compareNotebook([withData('run-a', record()), withData('run-b', record())], 'runs');
    const text = sources(nb);
    expect(nb.cells.some(c => (c.metadata.tags || []).includes(FILL_IN_TAG))).toBe(false);
    expect(text).not.toContain('FILL IN');
    expect(text).not.toContain('held_out = None');
    expect(text).toContain('from ftkit.data import provenance\n\nheld_out = provenance.held_out(runs[0])');
    expect(text).toContain('The 48 rows `run-a` was measured on');
    expect(text).not.toContain('**Note:**');
    // The held-out rows come before the panel that measures on them.
    const codeCells = nb.cells.filter(c => c.cell_type === 'code').map(c => c.source);
    expect(codeCells[codeCells.length - 2]).toContain('provenance.held_out(runs[0])');
    expect(codeCells[codeCells.length - 1]).toContain('ComparePanel(model, tokenizer, dataset=held_out');
  });

  it('prefers the data record to a data section of the config', () => {
    const nb = compareNotebook(
      [withData('run-a', record(), { data: { source: 'support_routing', test_size: 0.25, seed: 3 } })],
      'runs'
    );
    expect(sources(nb)).toContain('provenance.held_out(runs[0])');
    expect(sources(nb)).not.toContain('SOURCE =');
  });

  it('notes the runs whose held-out rows differ from the first one\'s', () => {
    const text = sources(
      compareNotebook(
        [withData('run-a', record()), withData('run-b', record({ held_out_sha256: 'ef'.repeat(32) })), detail('old')],
        'runs'
      )
    );
    expect(text).toContain('**Note:** `run-b`, `old` recorded other held-out rows (or none)');
  });

  it('keeps the marked cell for a run trained on rows held in memory, and says so', () => {
    const nb = compareNotebook([withData('run-a', record({ reproducible: false, source: 'list in memory', path: null }))],
      'runs');
    expect(nb.cells.filter(c => (c.metadata.tags || []).includes(FILL_IN_TAG))).toHaveLength(1);
    expect(sources(nb)).toContain('`run-a` was trained on rows held in memory (list in memory)');
  });

  it('keeps the marked cell for a run whose data record cannot be read, and says why', () => {
    const nb = compareNotebook([{ ...detail('run-a'), data: null, data_note: 'data.json is not valid JSON' }], 'runs');
    expect(nb.cells.filter(c => (c.metadata.tags || []).includes(FILL_IN_TAG))).toHaveLength(1);
    expect(sources(nb)).toContain("`run-a`'s data record cannot be read (data.json is not valid JSON)");
  });

  it('says when the runs have different base models', () => {
    const text = sources(compareNotebook([detail('a'), detail('b', { base_model: 'other/model' })], 'runs'));
    expect(text).toContain('different base models (smollm2-135m-instruct, other/model)');
  });

  it('refuses an empty selection', () => {
    expect(() => compareNotebook([], 'runs')).toThrow('select at least one run');
  });

  it('gives code cells no outputs and no execution count', () => {
    for (const cell of compareNotebook([detail('a')], 'runs').cells.filter(c => c.cell_type === 'code')) {
      expect(cell.outputs).toEqual([]);
      expect(cell.execution_count).toBeNull();
    }
  });
});

describe('starterNotebook', () => {
  it('loads a model, the data in a DataPanel, splits it and shows a TrainPanel', () => {
    const text = starterNotebook().cells.map(c => c.source).join('\n');
    for (const call of [
      'model, tokenizer = load_model()',
      'DataPanel(tokenizer=tokenizer, source=EXAMPLE',
      'data.use_this_data(',
      'TrainPanel(model, tokenizer, train=train'
    ]) {
      expect(text).toContain(call);
    }
  });
});

describe('paths', () => {
  it('joins a folder and a name the way the contents API spells paths', () => {
    expect(joinPath('', 'a.ipynb')).toBe('a.ipynb');
    expect(joinPath('work/sub/', 'a.ipynb')).toBe('work/sub/a.ipynb');
  });

  it('finds the first free name', async () => {
    const taken = new Set(['f/compare_runs.ipynb', 'f/compare_runs-1.ipynb']);
    expect(await freeName('f', 'compare_runs', async p => taken.has(p))).toBe('f/compare_runs-2.ipynb');
    expect(await freeName('', 'fine_tuning', async () => false)).toBe('fine_tuning.ipynb');
  });
});
