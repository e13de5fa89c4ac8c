import { IRunSummary } from '../src/model';

/** A run as GET ftkit/api/runs lists it; `over` replaces fields. */
export function run(over: Partial<IRunSummary> = {}): IRunSummary {
  return {
    id: '20261126-101500-support-sft',
    name: 'support-sft',
    kind: 'sft',
    status: 'completed',
    step: 40,
    max_steps: 40,
    metric: { name: 'exact_match', variant: '20261126-101500-support-sft', value: 0.8125 },
    started: 1795000000,
    device: 'cpu (float32): no GPU; this CPU has no native bfloat16, so float32',
    loss: [
      [1, 2.5],
      [2, 2.0],
      [3, 1.5]
    ],
    ...over
  };
}

/** A fetch Response with a JSON (or text) body. */
export function reply(status: number, body: unknown, type = 'application/json'): Response {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  return {
    ok: status >= 200 && status < 300,
    status,
    statusText: String(status),
    headers: { get: () => type },
    text: async () => text,
    json: async () => JSON.parse(text)
  } as unknown as Response;
}
