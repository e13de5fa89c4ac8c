/**
 * Polls the runs list: every `interval` seconds while a run is running, every `idleInterval`
 * otherwise, or not at all with `pollOnlyWhileActive` and nothing running (nextPollDelay says
 * which). One request at a time: a refresh asked for during a poll waits for it.
 */

import { IPollSettings, IRunsResponse, nextPollDelay } from './model';

export class RunsPoller {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private inFlight: Promise<void> | null = null;
  private stopped = true;
  private _last: IRunsResponse | null = null;
  /** when (ms from now) the next poll is due, or null when none is scheduled; for the tests */
  scheduledDelay: number | null = null;

  constructor(
    private readonly load: () => Promise<IRunsResponse>,
    private readonly settings: () => IPollSettings,
    private readonly onUpdate: (runs: IRunsResponse) => void,
    private readonly onError: (error: unknown) => void
  ) {}

  get last(): IRunsResponse | null {
    return this._last;
  }

  get running(): boolean {
    return !this.stopped;
  }

  /** Poll now, then keep polling on schedule. */
  start(): Promise<void> {
    this.stopped = false;
    return this.refresh();
  }

  /** No more polls until start() or refresh(). */
  stop(): void {
    this.stopped = true;
    this.clear();
  }

  /** Poll once now (and reschedule, unless stopped). */
  refresh(): Promise<void> {
    if (this.inFlight) {
      return this.inFlight;
    }
    this.clear();
    this.inFlight = this.poll().finally(() => {
      this.inFlight = null;
    });
    return this.inFlight;
  }

  /** The settings changed: the next poll follows them. */
  reschedule(): void {
    if (!this.stopped && !this.inFlight) {
      this.schedule(nextPollDelay(this._last?.runs ?? [], this.settings()));
    }
  }

  private async poll(): Promise<void> {
    let failed = false;
    try {
      this._last = await this.load();
      this.onUpdate(this._last);
    } catch (error) {
      failed = true;
      this.onError(error);
    }
    if (!this.stopped) {
      this.schedule(nextPollDelay(this._last?.runs ?? [], this.settings(), failed));
    }
  }

  private schedule(delay: number | null): void {
    this.clear();
    this.scheduledDelay = delay;
    if (delay !== null) {
      this.timer = setTimeout(() => {
        this.timer = null;
        void this.refresh();
      }, delay);
    }
  }

  private clear(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    this.scheduledDelay = null;
  }
}
