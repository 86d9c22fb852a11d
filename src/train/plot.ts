// Training curves as a self-contained HTML page with inline SVG (loss and error vs. iterations, as in the
// paper's figures): no script, no network, opens anywhere.

export interface Curve {
  label: string;
  colour: string;
  points: [number, number][];
}

/** A vertical line across the panels, e.g. where a run was resumed. */
export interface Marker {
  x: number;
  label: string;
}

/** Panel size; `legend` > 0 puts the legend in a column of that width right of the plot (for many curves). */
export interface PanelSize {
  width: number;
  height: number;
  legend: number;
}

/** One SVG panel: curves against iterations, y on a log scale if `log`. */
export function panel(title: string, curves: Curve[], yLabel: string, log: boolean, markers: readonly Marker[], size: PanelSize = { width: 560, height: 300, legend: 0 }): string {
  const w = size.width;
  const h = size.height;
  const m = { l: 60, r: size.legend > 0 ? size.legend + 20 : 20, t: 30, b: 40 };
  const all = curves.flatMap((c) => c.points).filter(([, y]) => Number.isFinite(y) && (!log || y > 0));
  if (all.length === 0) return `<svg width="${w}" height="${h}"><text x="20" y="40">${title}: no data yet</text></svg>`;
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => (log ? Math.log10(y) : y));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs, Math.min(...xs) + 1)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (y1 - y0 < 1e-9) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const sx = (x: number): number => m.l + ((x - x0) / (x1 - x0)) * (w - m.l - m.r);
  const sy = (y: number): number => h - m.b - (((log ? Math.log10(y) : y) - y0) / (y1 - y0)) * (h - m.t - m.b);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = y0 + f * (y1 - y0);
    const shown = log ? 10 ** v : v;
    const y = h - m.b - f * (h - m.t - m.b);
    return `<line x1="${m.l}" x2="${w - m.r}" y1="${y}" y2="${y}" stroke="#eee"/><text x="${m.l - 6}" y="${y + 4}" text-anchor="end" font-size="11">${shown.toPrecision(3)}</text>`;
  });
  const lines = curves
    .filter((c) => c.points.length > 0)
    .map((c) => {
      const pts = c.points.filter(([, y]) => Number.isFinite(y) && (!log || y > 0)).map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
      return `<polyline fill="none" stroke="${c.colour}" stroke-width="1.5" points="${pts.join(' ')}"/>`;
    });
  const marks = markers
    .filter((k) => k.x >= x0 && k.x <= x1)
    .map((k) => `<line x1="${sx(k.x).toFixed(1)}" x2="${sx(k.x).toFixed(1)}" y1="${m.t}" y2="${h - m.b}" stroke="#888" stroke-dasharray="4 3"/><text x="${(sx(k.x) + 3).toFixed(1)}" y="${m.t + 10}" font-size="10" fill="#666">${k.label}</text>`);
  const legendX = size.legend > 0 ? w - size.legend : w - m.r - 150;
  const legend = curves.map((c, i) => `<text x="${legendX}" y="${m.t + 14 * (i + 1)}" fill="${c.colour}" font-size="12">${c.label}</text>`);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">`,
    `<text x="${m.l}" y="18" font-size="14">${title}</text>`,
    ...ticks,
    `<line x1="${m.l}" x2="${w - m.r}" y1="${h - m.b}" y2="${h - m.b}" stroke="#888"/><line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${h - m.b}" stroke="#888"/>`,
    `<text x="${m.l}" y="${h - 8}" font-size="11">${x0}</text><text x="${w - m.r}" y="${h - 8}" text-anchor="end" font-size="11">${x1} iterations</text>`,
    `<text x="14" y="${h / 2}" font-size="11" transform="rotate(-90 14 ${h / 2})" text-anchor="middle">${yLabel}</text>`,
    ...marks,
    ...lines,
    ...legend,
    '</svg>',
  ].join('\n');
}

export function curvesHtml(title: string, loss: Curve[], error: Curve[], markers: readonly Marker[] = []): string {
  const esc = (s: string): string => s.replace(/[&<>]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[ch]!);
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head><body style="font-family:sans-serif">
<h2>${esc(title)}</h2>
${panel('training loss', loss, 'loss (log)', true, markers)}
${panel('error (%)', error, 'error %', false, markers)}
</body></html>
`;
}
