// A study's results as a markdown table and a self-contained page in the style of the paper's Fig. 3 (training
// loss on a log scale and test error against iterations, one line per row), with the command at the top.

import { type Curve, panel } from '../train/plot.js';
import { type RowResult, type RunResult, type StudyResults, median } from './study.js';
import { paperText } from './tables.js';

const PALETTE = ['#000000', '#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#9a6324', '#808000', '#469990', '#800000'];

/** "lr 0.1 (x0.1 at 100, 150)", or "lr 0.01 throughout". */
function rate(s: StudyResults['settings']): string {
  const w = s.warmup;
  if (w && w.iterations >= s.iterations) return `lr ${w.lr} throughout (the paper's warm-up rate, which it keeps for its first ${w.iterations} iterations)`;
  const drops = s.milestones.length ? ` (x${s.gamma} at ${s.milestones.join(', ')})` : ' (no drop within the run)';
  return `${w ? `lr ${w.lr} for the first ${w.iterations} iterations (warm-up), then ` : ''}lr ${s.lr}${drops}`;
}
const pct = (x: number | null): string => (x === null ? '-' : x.toFixed(2));
const loss = (x: number | null): string => (x === null ? '-' : x.toPrecision(3));

function status(r: RowResult, iterations: number): string {
  if (r.runs.length === 0) return 'not run';
  const done = r.runs.filter((x) => x.state === 'done' || x.state === 'diverged').length;
  const diverged = r.runs.filter((x) => x.state === 'diverged');
  const parts: string[] = [];
  if (done < r.runs.length) parts.push(`${done} of ${r.runs.length} runs finished (at ${Math.max(...r.runs.map((x) => x.iteration))} of ${iterations})`);
  if (diverged.length) parts.push(`diverged (loss not finite) at iteration ${diverged.map((x) => x.iteration).join(', ')}`);
  return parts.join('; ');
}

/** "12.34 (11.90-13.10)" with a spread over seeds, else the median alone. */
function withSpread(m: number | null, spread: [number, number] | undefined, f: (x: number | null) => string): string {
  if (!spread) return f(m);
  const s = (x: number): string => (Number.isFinite(x) ? f(x) : 'diverged');
  return `${f(m)} (${s(spread[0])}-${s(spread[1])})`;
}

/** At this budget: learning or still at chance; beside it what the paper reports after 64k iterations. */
function verdict(r: RowResult): string {
  if (r.learns === null) return '-';
  const ours = r.runs.every((x) => x.state === 'diverged') ? 'diverged' : r.learns ? 'learns' : 'at chance';
  if (r.paper === null) return ours;
  return `${ours} (paper: ${r.paper === 'fail' ? 'fail' : 'converges'})`;
}

const points = (x: number | null): string => (x === null ? '-' : `${x >= 0 ? '+' : ''}${x.toFixed(2)}`);

export function studyMarkdown(r: StudyResults): string {
  const s = r.settings;
  const seeds = Math.max(1, ...r.rows.map((x) => x.runs.length));
  const lines = [
    `# ${r.title}`,
    '',
    `Reproduce: \`${r.command}\``,
    '',
    `${r.network}; ${s.iterations} iterations, batch ${s.batch}, ${rate(s)}, SGD momentum 0.9, weight decay 1e-4; every row the same seeds and data order.`,
    `Training loss and error: mean over the last ${s.logEvery} training batches (augmented, as trained). Test error: ${s.testLimit ? `the first ${s.testLimit}` : 'all'} test images, at the last iteration.${seeds > 1 ? ' Medians over seeds, min-max in brackets.' : ''}`,
    `Paper: ${r.source}. Test error more than 10 points below chance counts as learning; the paper's figures are after 64k iterations.`,
    '',
    `| row | paper | test error (%) | vs ${r.rows[0].id} | training error (%) | training loss | at this budget | notes |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const row of r.rows) {
    const m = row.median;
    const notes = [row.remark, status(row, s.iterations)].filter(Boolean).join('; ');
    lines.push(
      `| ${row.label} | ${paperText(row.paper ?? undefined)} | ${withSpread(m?.testError ?? null, row.spread?.testError, pct)} | ${points(row.vsFirst)} | ${pct(m?.trainError ?? null)} | ${withSpread(m?.trainLoss ?? null, row.spread?.trainLoss, loss)} | ${verdict(row)} | ${notes} |`,
    );
  }
  lines.push('', 'What the numbers show:', '');
  for (const c of r.checks) lines.push(`- ${c.holds === null ? '(not enough rows run) ' : c.holds ? 'yes: ' : 'no: '}${c.text}`);
  lines.push('', 'Each row alone (seed 0):', '');
  for (const row of r.rows) lines.push(`- ${row.id}: \`${row.trainCommand}\``);
  lines.push('', `Written ${r.written}.`, '');
  return lines.join('\n');
}

/** The curve of a row: its one run, or the median over seeds at each iteration all of them logged. */
function rowCurve(runs: RunResult[], key: 'lossCurve' | 'testCurve'): [number, number][] {
  if (runs.length === 1) return runs[0][key];
  const at = new Map<number, number[]>();
  for (const run of runs) for (const [x, y] of run[key]) at.set(x, [...(at.get(x) ?? []), y]);
  return [...at.entries()]
    .filter(([, ys]) => ys.length === runs.length)
    .sort((a, b) => a[0] - b[0])
    .map(([x, ys]) => [x, median(ys)]);
}

const esc = (s: string): string => s.replace(/[&<>"]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[ch]!);

export function studyHtml(r: StudyResults): string {
  const withRuns = r.rows.filter((row) => row.runs.length > 0);
  const curves = (key: 'lossCurve' | 'testCurve'): Curve[] =>
    withRuns.map((row) => ({ label: esc(row.label), colour: PALETTE[r.rows.indexOf(row) % PALETTE.length], points: rowCurve(row.runs, key) }));
  const size = { width: 900, height: 420, legend: 290 };
  const md = studyMarkdown(r);
  const table = md
    .split('\n')
    .filter((l) => l.startsWith('|') && !l.startsWith('| ---'))
    .map((l, i) => {
      const cells = l.slice(1, -1).split(' | ').map((c) => c.trim());
      const tag = i === 0 ? 'th' : 'td';
      return `<tr>${cells.map((c) => `<${tag}>${esc(c)}</${tag}>`).join('')}</tr>`;
    })
    .join('\n');
  const checks = r.checks.map((c) => `<li>${c.holds === null ? '(not enough rows run) ' : c.holds ? 'yes: ' : '<b>no</b>: '}${esc(c.text)}</li>`).join('\n');
  const s = r.settings;
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(r.title)}</title>
<style>body{font-family:sans-serif;max-width:1000px;margin:1em auto}table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}code{background:#f4f4f4;padding:2px 4px}</style></head><body>
<h2>${esc(r.title)}</h2>
<p>Reproduce: <code>${esc(r.command)}</code></p>
<p>${esc(r.network)}; ${s.iterations} iterations, batch ${s.batch}, ${rate(s)}. Paper: ${esc(r.source)}.</p>
<table>
${table}
</table>
<ul>
${checks}
</ul>
<h3>As in the paper's Fig. 3: training loss (log scale) and test error against iterations</h3>
${panel('training loss (mean over each logged window of batches)', curves('lossCurve'), 'loss (log)', true, [], size)}
${panel('test error (%)', curves('testCurve'), 'error %', false, [], size)}
<p style="color:#666;font-size:12px">Written ${esc(r.written)} from the run folders beside this page.</p>
</body></html>
`;
}
