// The layer table of `resnet-onnx info`: per stage units, widths, output size, parameters and MACs.

import type { Graph } from '../graph/graph.js';
import type { ResNetConfig } from './config.js';
import { buildResNet } from './preact.js';

export interface SummaryRow {
  name: string;
  units: number | null;
  width: number | null;
  outChannels: number;
  outSize: string;
  params: number;
  macs: number;
}

export interface Summary {
  rows: SummaryRow[];
  params: number;
  macs: number;
  inputSize: number;
}

/** Multiply-accumulates of one forward pass, per node, from the graph's (concrete) shapes. */
export function nodeMacs(g: Graph): Map<string, number> {
  const out = new Map<string, number>();
  for (const n of g.nodes) {
    if (n.op !== 'Conv' && n.op !== 'Gemm' && n.op !== 'MatMul') continue;
    const w = g.types.get(n.inputs[1])!.shape as number[];
    const y = g.types.get(n.outputs[0])!.shape as number[];
    const elems = y.reduce((p, d) => p * (d as number), 1);
    if (n.op === 'Conv') out.set(n.name, elems * w[1] * w[2] * w[3]);
    else out.set(n.name, elems * (n.op === 'Gemm' && (n.attrs.transB?.value ?? 0) === 1 ? w[1] : w[0]));
  }
  return out;
}

export function summarize(cfg: ResNetConfig, inputSize: number): Summary {
  const g = buildResNet(cfg, { inputShape: [1, cfg.inChannels, inputSize, inputSize] });
  const macs = nodeMacs(g);
  const group = (name: string): string => name.split('.')[0];
  const rows = new Map<string, SummaryRow>();
  const order = ['stem', ...cfg.stages.map((_, i) => `stage${i + 1}`), 'head'];
  order.forEach((name, i) => {
    const st = name.startsWith('stage') ? cfg.stages[i - 1] : undefined;
    rows.set(name, { name, units: st?.units ?? null, width: st?.width ?? null, outChannels: 0, outSize: '', params: 0, macs: 0 });
  });
  for (const init of g.initializers) if (init.role === 'param') rows.get(group(init.name))!.params += init.data.dims.reduce((p, d) => p * d, 1);
  for (const [name, m] of macs) rows.get(group(name))!.macs += m;
  for (const n of g.nodes) {
    const row = rows.get(group(n.name))!;
    const shape = g.types.get(n.outputs[0])!.shape as number[];
    row.outChannels = shape[1];
    row.outSize = shape.length === 4 ? `${shape[2]}x${shape[3]}` : '';
  }
  const list = [...rows.values()];
  return { rows: list, params: list.reduce((s, r) => s + r.params, 0), macs: list.reduce((s, r) => s + r.macs, 0), inputSize };
}

export function formatSummary(s: Summary, title: string): string {
  const fmt = (n: number): string => n.toLocaleString('en-US');
  const header = ['layer', 'units', 'width', 'out ch', 'out size', 'params', `MACs @${s.inputSize}`];
  const body = s.rows.map((r) => [r.name, r.units?.toString() ?? '', r.width?.toString() ?? '', String(r.outChannels), r.outSize, fmt(r.params), fmt(r.macs)]);
  const total = ['total', '', '', '', '', fmt(s.params), fmt(s.macs)];
  const all = [header, ...body, total];
  const widths = header.map((_, c) => Math.max(...all.map((r) => r[c].length)));
  const line = (r: string[]): string => r.map((x, c) => (c === 0 ? x.padEnd(widths[c]) : x.padStart(widths[c]))).join('  ');
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [title, line(header), sep, ...body.map(line), sep, line(total), `${(s.macs / 1e9).toFixed(2)} GMACs at ${s.inputSize}x${s.inputSize}, ${(s.params / 1e6).toFixed(2)}M parameters`].join('\n');
}
