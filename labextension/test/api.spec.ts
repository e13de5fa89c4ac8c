import { ApiError, FtkitApi } from '../src/api';
import { reply, run } from './fixtures';

function mockApi(...responses: Response[]) {
  const calls: Array<{ url: string; init: RequestInit }> = [];
  const api = new FtkitApi('http://lab/base/', async (url, init) => {
    calls.push({ url, init });
    const next = responses.shift();
    if (!next) {
      throw new Error(`unexpected request ${url}`);
    }
    return next;
  });
  return { api, calls };
}

describe('FtkitApi', () => {
  it('lists the runs from {base}/ftkit/api/runs', async () => {
    const body = { runs_dir: '/r', runs: [run()] };
    const { api, calls } = mockApi(reply(200, body));
    expect(await api.runs()).toEqual(body);
    expect(calls[0].url).toBe('http://lab/base/ftkit/api/runs');
    expect(calls[0].init.method).toBe('GET');
  });

  it('joins a base URL without a trailing slash and encodes the run id as one segment', () => {
    const api = new FtkitApi('http://lab', async () => reply(200, {}));
    expect(api.url('runs', 'a b/c', 'report')).toBe('http://lab/ftkit/api/runs/a%20b%2Fc/report');
  });

  it('reads a run, its report as text, and the tour', async () => {
    const { api, calls } = mockApi(
      reply(200, { id: 'x', config: {}, status: {}, evaluation: null }),
      reply(200, '<html><body>report</body></html>', 'text/html'),
      reply(200, { notebooks: [] })
    );
    expect((await api.run('x')).id).toBe('x');
    expect(await api.report('x')).toBe('<html><body>report</body></html>');
    expect(await api.tour()).toEqual({ notebooks: [] });
    expect(calls.map(c => c.url)).toEqual([
      'http://lab/base/ftkit/api/runs/x',
      'http://lab/base/ftkit/api/runs/x/report',
      'http://lab/base/ftkit/api/tour'
    ]);
  });

  it('POSTs a stop request', async () => {
    const { api, calls } = mockApi(reply(202, { id: 'x', stop_requested: true }));
    expect(await api.stop('x')).toEqual({ id: 'x', stop_requested: true });
    expect(calls[0]).toEqual({ url: 'http://lab/base/ftkit/api/runs/x/stop', init: { method: 'POST' } });
  });

  it("raises the server's message on 409", async () => {
    const { api } = mockApi(reply(409, { message: 'run x is not running (status: completed)' }));
    await expect(api.stop('x')).rejects.toEqual(new ApiError(409, 'run x is not running (status: completed)'));
  });

  it('says the server extension is missing on a bare 404', async () => {
    const { api } = mockApi(reply(404, '<html>404 Not Found</html>', 'text/html'));
    await expect(api.runs()).rejects.toThrow("ftkit's server extension is not loaded");
  });

  it('refuses a reply that is not JSON', async () => {
    const { api } = mockApi(reply(200, '<html>login</html>', 'text/html'));
    await expect(api.runs()).rejects.toThrow('not JSON');
  });
});
