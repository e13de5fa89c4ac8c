import { DEFAULT_SETTINGS, IPollSettings, IRunsResponse } from '../src/model';
import { RunsPoller } from '../src/poller';
import { run } from './fixtures';

jest.useFakeTimers();

function setup(responses: Array<IRunsResponse | Error>, settings: IPollSettings = DEFAULT_SETTINGS) {
  const seen: IRunsResponse[] = [];
  const errors: unknown[] = [];
  let calls = 0;
  const poller = new RunsPoller(
    async () => {
      const next = responses[Math.min(calls++, responses.length - 1)];
      if (next instanceof Error) {
        throw next;
      }
      return next;
    },
    () => settings,
    r => seen.push(r),
    e => errors.push(e)
  );
  return { poller, seen, errors, calls: () => calls };
}

const running = { runs_dir: 'runs', runs: [run({ status: 'running' })] };
const done = { runs_dir: 'runs', runs: [run({ status: 'completed' })] };

describe('RunsPoller', () => {
  it('polls every 2 s while a run is running, then slows down once it ends', async () => {
    const { poller, seen, calls } = setup([running, running, done]);
    await poller.start();
    expect(seen).toHaveLength(1);
    expect(poller.scheduledDelay).toBe(2000);
    await jest.advanceTimersByTimeAsync(2000);
    expect(calls()).toBe(2);
    await jest.advanceTimersByTimeAsync(2000);
    expect(calls()).toBe(3);
    expect(poller.scheduledDelay).toBe(15000);
    await jest.advanceTimersByTimeAsync(14000);
    expect(calls()).toBe(3);
    poller.stop();
  });

  it('stops polling when nothing runs and pollOnlyWhileActive is set; refresh polls once', async () => {
    const { poller, calls } = setup([done], { ...DEFAULT_SETTINGS, pollOnlyWhileActive: true });
    await poller.start();
    expect(poller.scheduledDelay).toBeNull();
    await jest.advanceTimersByTimeAsync(60000);
    expect(calls()).toBe(1);
    await poller.refresh();
    expect(calls()).toBe(2);
  });

  it('reports a failed poll and retries at the idle rate', async () => {
    const { poller, errors, seen } = setup([new Error('502'), running]);
    await poller.start();
    expect(errors).toHaveLength(1);
    expect(poller.scheduledDelay).toBe(15000);
    await jest.advanceTimersByTimeAsync(15000);
    expect(seen).toHaveLength(1);
    poller.stop();
  });

  it('polls no more once stopped', async () => {
    const { poller, calls } = setup([running]);
    await poller.start();
    poller.stop();
    await jest.advanceTimersByTimeAsync(10000);
    expect(calls()).toBe(1);
    expect(poller.running).toBe(false);
  });

  it('sends one request at a time', async () => {
    const { poller, calls } = setup([running]);
    await Promise.all([poller.start(), poller.refresh(), poller.refresh()]);
    expect(calls()).toBe(1);
    poller.stop();
  });

  it('follows changed settings at the next poll', async () => {
    const settings = { ...DEFAULT_SETTINGS };
    const { poller } = setup([running], settings);
    await poller.start();
    settings.interval = 7;
    poller.reschedule();
    expect(poller.scheduledDelay).toBe(7000);
    poller.stop();
  });
});
