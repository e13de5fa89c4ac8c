/**
 * The REST client of ftkit's server extension. Every request goes through `fetcher`, which the
 * plugin binds to `ServerConnection.makeRequest` with the server settings (so the token and the
 * XSRF cookie are handled the way the rest of JupyterLab handles them); tests pass a mock.
 */

import { IRunDetail, IRunsResponse, ITourResponse } from './model';

export type Fetcher = (url: string, init: RequestInit) => Promise<Response>;

/** A reply that is not 2xx: `status` is the HTTP code, the message the server's own when it sent one. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class FtkitApi {
  /** `baseUrl`: the server's base URL (ServerConnection settings' `baseUrl`), with or without a trailing slash. */
  constructor(
    readonly baseUrl: string,
    private readonly fetcher: Fetcher
  ) {}

  /** `{base}/ftkit/api/<parts...>`, each part URL-encoded (a run id is one path segment). */
  url(...parts: string[]): string {
    const base = this.baseUrl.endsWith('/') ? this.baseUrl : `${this.baseUrl}/`;
    return `${base}ftkit/api/${parts.map(encodeURIComponent).join('/')}`;
  }

  runs(): Promise<IRunsResponse> {
    return this.json(this.url('runs'));
  }

  run(id: string): Promise<IRunDetail> {
    return this.json(this.url('runs', id));
  }

  /** The run's self-contained report page, as HTML text. */
  async report(id: string): Promise<string> {
    const response = await this.send(this.url('runs', id, 'report'), { method: 'GET' });
    return response.text();
  }

  /** Ask the run's process to stop after its current step (202); 409 when it is not running. */
  stop(id: string): Promise<{ id: string; stop_requested: boolean }> {
    return this.json(this.url('runs', id, 'stop'), { method: 'POST' });
  }

  /** The guided notebooks shipped with ftkit, with their contents (see tour.ts). */
  tour(): Promise<ITourResponse> {
    return this.json(this.url('tour'));
  }

  private async json<T>(url: string, init: RequestInit = { method: 'GET' }): Promise<T> {
    const response = await this.send(url, init);
    const text = await response.text();
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new ApiError(response.status, `${url} answered with something that is not JSON: ${text.slice(0, 200)}`);
    }
  }

  private async send(url: string, init: RequestInit): Promise<Response> {
    const response = await this.fetcher(url, init);
    if (!response.ok) {
      throw new ApiError(response.status, await errorMessage(response, url));
    }
    return response;
  }
}

/** What went wrong, in words: the server's JSON `message` when it sent one. */
async function errorMessage(response: Response, url: string): Promise<string> {
  let text = '';
  try {
    text = await response.text();
    const body = JSON.parse(text);
    if (body && typeof body.message === 'string' && body.message) {
      return body.message;
    }
  } catch {
    // not JSON: fall through to the status line
  }
  if (response.status === 404 && url.includes('/ftkit/api/')) {
    return (
      `${response.status} from ${url}: ftkit's server extension is not loaded. Install ftkit in the ` +
      "environment JupyterLab runs in and restart it (`jupyter server extension list` should list ftkit)"
    );
  }
  return `${response.status} ${response.statusText || ''} from ${url}`.trim() + (text ? `: ${text.slice(0, 200)}` : '');
}
