/**
 * What the sidebar shows and does, as plain functions over the server's JSON: no DOM, no
 * JupyterLab, so the jest tests read like the rules they check.
 *
 * The shapes are those of ftkit's REST API (ftkit/server.py); the front end never reads a run
 * folder itself.
 */

/** A run as `GET {base}/ftkit/api/runs` lists it. */
export interface IRunSummary {
  id: string;
  name: string;
  kind: string;
  /** running | completed | stopped | failed | interrupted (a dead "running" one) */
  status: string;
  step: number;
  max_steps: number;
  metric: IMetric | null;
  /** unix seconds */
  started: number;
  device: string;
  /** the last (up to 50) logged losses, [step, loss] */
  loss: Array<[number, number]>;
  /** a stop was asked (POST .../stop) and the run has not ended yet */
  stop_requested?: boolean;
  /** why the server could not read this run (its status is then "unknown") */
  error?: string;
}

export interface IMetric {
  name: string;
  variant: string;
  value: number;
}

export interface IRunsResponse {
  runs_dir: string;
  runs: IRunSummary[];
}

/**
 * What a run's data record (data.json, ftkit/data/provenance.py) says, as the run detail sends it:
 * where its rows came from and how they were split. `reproducible` is false for rows that were
 * held in memory rather than read from a file.
 */
export interface IDataSummary {
  version: number | null;
  /** the source as given: a built-in example's name or a path */
  source: string | null;
  example: string | null;
  path: string | null;
  sha256: string | null;
  reproducible: boolean;
  test_size: number | null;
  seed: number | null;
  stratify_by: string | null;
  group_by: string | null;
  limit: number | null;
  train_limit: number | null;
  train_rows: number | null;
  test_rows: number | null;
  /** the held-out rows the run was measured on (after data.limit) */
  evaluated_rows: number | null;
  held_out_sha256: string | null;
  task: string | null;
}

/** `GET {base}/ftkit/api/runs/<id>` */
export interface IRunDetail {
  id: string;
  config: { [key: string]: any };
  status: any;
  evaluation: any;
  /** the run's data record, null when it recorded none (runs trained before ftkit kept it) */
  data?: IDataSummary | null;
  /** why the data record could not be read, when it could not */
  data_note?: string;
}

/** `GET {base}/ftkit/api/tour`: the guided notebooks, in tour order. */
export interface ITourResponse {
  notebooks: Array<{ name: string; content: any }>;
}

/** The extension's settings (schema/plugin.json). */
export interface IPollSettings {
  /** seconds between polls while a run is running */
  interval: number;
  /** seconds between polls while none is (ignored when pollOnlyWhileActive) */
  idleInterval: number;
  /** stop polling when no run is running (the refresh button polls once) */
  pollOnlyWhileActive: boolean;
}

export const DEFAULT_SETTINGS: IPollSettings = {
  interval: 2,
  idleInterval: 15,
  pollOnlyWhileActive: false
};

// Polling faster than this only loads the server: a training step logs at most a few times a second.
const MIN_INTERVAL_S = 0.5;

export const STATUSES = [
  'running',
  'completed',
  'stopped',
  'failed',
  'interrupted'
] as const;

/** A run whose process still trains: the only status Stop applies to, and the one polled fast. */
export function isActive(run: Pick<IRunSummary, 'status'>): boolean {
  return run.status === 'running';
}

/**
 * Running runs first (they are the ones being watched), then newest first; the id (which
 * starts with the creation time) breaks ties.
 */
export function sortRuns(runs: IRunSummary[]): IRunSummary[] {
  return [...runs].sort((a, b) => {
    const active = Number(isActive(b)) - Number(isActive(a));
    if (active !== 0) {
      return active;
    }
    const started = (b.started || 0) - (a.started || 0);
    if (started !== 0) {
      return started;
    }
    return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
  });
}

export interface IBadge {
  label: string;
  className: string;
  title: string;
}

const BADGE_TITLES: { [status: string]: string } = {
  running: 'Training now; the loss updates while it runs',
  completed: 'Finished all its steps (or its time limit)',
  stopped: 'Stopped on request; its adapter and checkpoints are kept',
  failed: 'Ended with an error: open the report or the notebook that ran it',
  interrupted:
    'Its process died while running (killed, out of memory, a closed kernel): resume it with train_sft(..., resume=run)'
};

/** The status badge: a known status gets its own colour class, anything else reads "unknown". */
export function statusBadge(status: string): IBadge {
  const known = (STATUSES as readonly string[]).includes(status);
  const label = known ? status : 'unknown';
  return {
    label,
    className: `ftkit-badge ftkit-badge-${label}`,
    title: BADGE_TITLES[label] ?? `status: ${status || 'none recorded'}`
  };
}

/**
 * The SVG path of a loss sparkline in a `width` x `height` box: steps left to right, the lowest
 * loss at the bottom, `pad` pixels kept free at each edge so the stroke is not clipped.
 * Points whose loss is not a finite number (NaN from a diverged step) are left out. One point
 * draws a flat line; none draws nothing ('').
 */
export function sparklinePath(
  loss: Array<[number, number]>,
  width = 120,
  height = 28,
  pad = 2
): string {
  const points = (loss || []).filter(
    p => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1])
  );
  if (points.length === 0) {
    return '';
  }
  const round = (v: number) => Math.round(v * 10) / 10;
  if (points.length === 1) {
    const y = round(height / 2);
    return `M${round(pad)} ${y}L${round(width - pad)} ${y}`;
  }
  const steps = points.map(p => p[0]);
  const losses = points.map(p => p[1]);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  const [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  const sx = (s: number) =>
    x1 === x0 ? width / 2 : pad + ((s - x0) / (x1 - x0)) * (width - 2 * pad);
  // A flat loss sits in the middle rather than on an edge.
  const sy = (l: number) =>
    y1 === y0
      ? height / 2
      : height - pad - ((l - y0) / (y1 - y0)) * (height - 2 * pad);
  return points
    .map((p, i) => `${i === 0 ? 'M' : 'L'}${round(sx(p[0]))} ${round(sy(p[1]))}`)
    .join('');
}

/** "step 12 / 200", or "step 12" when the run has no step limit (max_steps <= 0). */
export function formatProgress(run: Pick<IRunSummary, 'step' | 'max_steps'>): string {
  const step = run.step ?? 0;
  return run.max_steps > 0 ? `step ${step} / ${run.max_steps}` : `step ${step}`;
}

/** The headline metric, "exact_match 0.812", or '' for a run never evaluated. */
export function formatMetric(metric: IMetric | null): string {
  if (!metric || typeof metric.value !== 'number' || !Number.isFinite(metric.value)) {
    return '';
  }
  const value = Math.abs(metric.value) < 10 ? metric.value.toFixed(3) : metric.value.toFixed(1);
  return `${metric.name} ${value}`;
}

/** The last logged loss, "loss 0.4213", or '' before the first log. */
export function formatLastLoss(loss: Array<[number, number]>): string {
  const last = (loss || []).filter(p => Number.isFinite(p?.[1])).pop();
  return last ? `loss ${last[1].toFixed(4)}` : '';
}

/**
 * Milliseconds until the next poll, or null for "do not poll again until asked": fast while any
 * run is running, slower otherwise, never with pollOnlyWhileActive and nothing running.
 * `failed` (the last poll failed) waits the idle interval, so a stopped server is not hammered.
 */
export function nextPollDelay(
  runs: IRunSummary[],
  settings: IPollSettings,
  failed = false
): number | null {
  const fast = Math.max(settings.interval, MIN_INTERVAL_S);
  const slow = Math.max(settings.idleInterval, fast);
  if (failed) {
    return slow * 1000;
  }
  if (runs.some(isActive)) {
    return fast * 1000;
  }
  return settings.pollOnlyWhileActive ? null : slow * 1000;
}

/** A Python string literal for `text` (JSON's double-quoted escapes are valid Python). */
export function pyString(text: string): string {
  return JSON.stringify(text);
}

/** The lines "Insert load_run" adds to the active notebook as a new cell. */
export function loadRunSnippet(runId: string): string {
  return `from ftkit.runs import load_run\nrun = load_run(${pyString(runId)})`;
}

// --- notebooks the extension creates -------------------------------------------------------------

export interface ICell {
  cell_type: 'code' | 'markdown';
  source: string;
  metadata: { [key: string]: any };
  outputs?: any[];
  execution_count?: number | null;
}

export interface INotebookContent {
  cells: ICell[];
  metadata: { [key: string]: any };
  nbformat: number;
  nbformat_minor: number;
}

function code(source: string, tags: string[] = []): ICell {
  const metadata = tags.length ? { tags } : {};
  return { cell_type: 'code', source, metadata, outputs: [], execution_count: null };
}

function markdown(source: string): ICell {
  return { cell_type: 'markdown', source, metadata: {} };
}

/** A notebook of `cells` that opens with the default Python kernel, without asking. */
export function notebook(cells: ICell[], kernel = 'python3', display = 'Python 3 (ipykernel)'): INotebookContent {
  return {
    cells,
    metadata: {
      kernelspec: { name: kernel, display_name: display, language: 'python' },
      language_info: { name: 'python' }
    },
    nbformat: 4,
    nbformat_minor: 5
  };
}

/**
 * Where a run's held-out rows come from, if its config records it: `config.data.source` (a
 * built-in example name or a path), with `test_size`, `seed` and `stratify_by` of the split.
 * Runs recorded by ftkit 0.1 keep only a fingerprint of their training rows, so this is null
 * for them and the compare notebook asks for the rows in a marked cell instead.
 */
export function dataSource(config: { [key: string]: any } | undefined): {
  source: string;
  test_size: number;
  seed: number;
  stratify_by: string | null;
} | null {
  const data = config?.data;
  if (!data || typeof data !== 'object' || typeof data.source !== 'string' || !data.source) {
    return null;
  }
  return {
    source: data.source,
    test_size: typeof data.test_size === 'number' ? data.test_size : 0.2,
    seed: typeof data.seed === 'number' ? data.seed : 0,
    stratify_by: typeof data.stratify_by === 'string' ? data.stratify_by : null
  };
}

export const FILL_IN_TAG = 'ftkit-fill-in';

/** Why the compare notebook cannot load a run's held-out rows itself, in words. */
function whyNoRecord(run: IRunDetail): string {
  if (run.data && !run.data.reproducible) {
    return `\`${run.id}\` was trained on rows held in memory (${run.data.source}), not read from a file`;
  }
  if (run.data_note) {
    return `\`${run.id}\`'s data record cannot be read (${run.data_note})`;
  }
  return (
    'These runs did not record where their data came from (no `data.json`: trained before ftkit kept one,\n' +
    'or by `train_sft` without `data_record=`; their config keeps only a fingerprint of the training rows)'
  );
}

/**
 * The "Compare selected" notebook: load the runs, the base model of the first one, the held-out
 * rows, and a ComparePanel over them (widgets/compare_panel.py). `runsDir` is the folder the
 * server reads runs from, passed as `root=` so the kernel finds them whatever its working folder.
 */
export function compareNotebook(runs: IRunDetail[], runsDir: string): INotebookContent {
  if (runs.length === 0) {
    throw new Error('select at least one run to compare');
  }
  const ids = runs.map(r => r.id);
  const bases = Array.from(new Set(runs.map(r => r.config?.base_model).filter(Boolean)));
  const loads = ids.map(id => `    load_run(${pyString(id)}, root=RUNS_ROOT),`).join('\n');
  const baseNote =
    bases.length > 1
      ? `\n# The runs were trained from different base models (${bases.join(', ')}): the prompt variants use\n` +
        "# the first run's; each run is still evaluated on its own base with its adapter."
      : '';
  const cells: ICell[] = [
    markdown(
      `# Compare fine-tuning runs\n\nCreated from the ftkit sidebar for ${ids
        .map(id => `\`${id}\``)
        .join(', ')}.\n\n` +
        "The ComparePanel asks the base model (zero-shot) and each run (its base model with its adapter,\n" +
        'asked with the prompt it was trained on) the same held-out rows, then shows the score with its\n' +
        '95% interval, latency, tokens per request and training cost side by side.'
    ),
    code(
      'from ftkit import load_model\n' +
        'from ftkit.runs import load_run\n' +
        'from ftkit.widgets import ComparePanel\n\n' +
        `RUNS_ROOT = ${pyString(runsDir)}  # where the ftkit server reads runs from\n` +
        `runs = [\n${loads}\n]\n` +
        `model, tokenizer = load_model(runs[0].config["base_model"])  # the base model the first run trained from` +
        baseNote
    )
  ];
  const record = runs[0].data;
  const source = dataSource(runs[0].config);
  if (record && record.reproducible) {
    const others = runs.filter(r => r.data?.held_out_sha256 !== record.held_out_sha256).map(r => r.id);
    const rows = record.evaluated_rows ?? record.test_rows;
    const count = typeof rows === 'number' ? `${rows} ` : '';
    cells.push(
      markdown(
        '## The held-out rows\n\n' +
          `The ${count}rows \`${runs[0].id}\` was measured on, made again from its data record ` +
          `(\`data.json\`): \`${record.source}\` read with the same mapping, split with seed ${record.seed} ` +
          'and limited as then. If the file changed since, this refuses and names both hashes.' +
          (others.length
            ? `\n\n**Note:** ${others.map(id => `\`${id}\``).join(', ')} recorded other held-out rows (or none): ` +
              'they are measured here on the first run\'s, which they may have trained on.'
            : '')
      ),
      code(
        'from ftkit.data import provenance\n\n' +
          'held_out = provenance.held_out(runs[0])  # the split recorded in the run\'s data.json'
      )
    );
  } else if (source) {
    cells.push(
      markdown('## The held-out rows\n\nThe same split the first run recorded: rows it never trained on.'),
      code(
        'from ftkit import examples, load_data, split\n\n' +
          `SOURCE = ${pyString(source.source)}  # recorded in the run's config\n` +
          'data = examples.load(SOURCE) if SOURCE in examples.names() else load_data(SOURCE)\n' +
          `held_out = split(data, test_size=${source.test_size}, seed=${source.seed}, ` +
          `stratify_by=${source.stratify_by === null ? 'None' : pyString(source.stratify_by)})["test"]`
      )
    );
  } else {
    cells.push(
      markdown(
        '## ✎ Fill in: the held-out rows\n\n' +
          whyNoRecord(runs[0]) +
          ', so say it in the next cell: the rows every variant is measured on, which must\n' +
          'be rows the runs never trained on. The panel below refuses to start until `held_out` is set.'
      ),
      code(
        '# ✎ FILL IN: the held-out rows, for example the quickstart split of the built-in example:\n' +
          '#   from ftkit import examples, split\n' +
          '#   held_out = split(examples.load("support_routing"), test_size=0.2, seed=0, stratify_by="label")["test"]\n' +
          '# or your own file: load_data("tickets.csv") split the same way it was split for training.\n' +
          'held_out = None',
        [FILL_IN_TAG]
      )
    );
  }
  cells.push(
    code(
      'if held_out is None:\n' +
        '    raise ValueError("set held_out in the cell above: the held-out rows to compare the runs on")\n' +
        'compare = ComparePanel(model, tokenizer, dataset=held_out, runs=runs)\n' +
        'compare'
    )
  );
  return notebook(cells);
}

/** "New fine-tuning notebook": a model, data in the DataPanel, a split, and a TrainPanel. */
export function starterNotebook(): INotebookContent {
  return notebook([
    markdown(
      '# Fine-tuning notebook\n\n' +
        'Load a model, bring data and read its report, split it, then fine-tune with LoRA from the panel.\n' +
        'The guided tour (launcher: *ftkit tour*) explains each step; the sidebar *Fine-tuning runs* shows\n' +
        'every run with its live loss.'
    ),
    code(
      'from ftkit import describe_device, examples, load_model\n' +
        'from ftkit.widgets import DataPanel, TrainPanel\n\n' +
        'print(describe_device())\n' +
        'model, tokenizer = load_model()  # the embedded SmolLM2-135M-Instruct; a saved folder or a Hub id also work'
    ),
    markdown(
      '## Data\n\nA built-in example to start with (`examples.names()` lists them all), or your own file in\n' +
        "the panel: CSV, JSON, JSONL, Parquet. Read the report before training."
    ),
    code(
      'EXAMPLE = "support_routing"  # one of examples.names()\n' +
        'data = DataPanel(tokenizer=tokenizer, source=EXAMPLE, max_length=256)\n' +
        'data'
    ),
    code(
      'splits = data.use_this_data(test_size=0.2, seed=0, stratify=True)\n' +
        'train, held_out = splits["train"], splits["test"]\n' +
        'print(f"{len(train)} training rows, {len(held_out)} held-out rows")'
    ),
    markdown(
      '## Fine-tune\n\nPress **Start**. The task decides the prompt the model is trained on (the one you will\n' +
        "serve it with); for your own data pass `task=\"classification\"` (or another of `ftkit.tasks`)."
    ),
    code(
      'train_panel = TrainPanel(model, tokenizer, train=train, task=examples.info(EXAMPLE).task, method="sft")\n' +
        'train_panel'
    )
  ]);
}

/** `stem.ipynb`, or `stem-1.ipynb`, `stem-2.ipynb`, ... : the first name `exists` says is free. */
export async function freeName(
  folder: string,
  stem: string,
  exists: (path: string) => Promise<boolean>,
  ext = '.ipynb'
): Promise<string> {
  for (let i = 0; i < 1000; i++) {
    const name = i === 0 ? `${stem}${ext}` : `${stem}-${i}${ext}`;
    const path = joinPath(folder, name);
    if (!(await exists(path))) {
      return path;
    }
  }
  throw new Error(`no free name for ${stem}${ext} in ${folder || 'the root folder'}`);
}

/** A contents-API path: `folder/name`, or `name` in the root folder. */
export function joinPath(folder: string, name: string): string {
  const clean = (folder || '').replace(/^\/+|\/+$/g, '');
  return clean ? `${clean}/${name}` : name;
}

export const TOUR_START = '00_quickstart.ipynb';
