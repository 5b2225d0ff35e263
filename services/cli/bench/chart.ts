/**
 * One SVG per run, no dependency: left, tokens per second served from cache per strategy (log
 * scale; no-cache is the compute model's recompute rate); right, the capacity sweep (simulated
 * LRU, Belady and infinite over the whole trace) with the real fabric's measured points.
 */
import type { BenchReport } from './report.js';

const W = 960;
const H = 420;
const PANEL = { top: 50, bottom: 60, height: H - 110 };

export function escapeXml(s: string): string {
  return s.replace(
    /[<>&'"]/g,
    (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c] ?? c,
  );
}

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${escapeXml(s)}</text>`;
}

function barsPanel(r: BenchReport, x0: number, width: number): string[] {
  const out: string[] = [
    text(
      x0,
      30,
      `tokens/s from cache (${r.strategies[0]?.workload ?? '-'}, log scale)`,
      'font-weight="bold"',
    ),
  ];
  const rows = r.strategies.filter((s) => s.tokensPerSec > 0);
  if (rows.length === 0) return [...out, text(x0, 80, 'no strategy results')];
  const maxLog = Math.ceil(Math.log10(Math.max(...rows.map((s) => s.tokensPerSec))));
  const minLog = Math.min(maxLog - 1, Math.floor(Math.log10(Math.min(...rows.map((s) => s.tokensPerSec)))));
  const y = (v: number): number =>
    PANEL.top + PANEL.height * (1 - (Math.log10(Math.max(v, 10 ** minLog)) - minLog) / (maxLog - minLog));
  for (let e = minLog; e <= maxLog; e++) {
    out.push(
      `<line x1="${x0}" x2="${x0 + width}" y1="${y(10 ** e).toFixed(1)}" y2="${y(10 ** e).toFixed(1)}" stroke="#ddd"/>`,
    );
    out.push(text(x0 - 4, y(10 ** e) + 4, `1e${e}`, 'text-anchor="end" font-size="10"'));
  }
  const slot = width / rows.length;
  rows.forEach((s, i) => {
    const bx = x0 + i * slot + slot * 0.15;
    const top = y(s.tokensPerSec);
    const fill = s.source === 'model' ? '#bbb' : s.name === 'kvfabric' ? '#2a7' : '#57a';
    out.push(
      `<rect x="${bx.toFixed(1)}" y="${top.toFixed(1)}" width="${(slot * 0.7).toFixed(1)}" height="${(PANEL.top + PANEL.height - top).toFixed(1)}" fill="${fill}"/>`,
    );
    out.push(
      text(
        bx + slot * 0.35,
        PANEL.top + PANEL.height + 16,
        s.name + (s.source === 'model' ? ' (model)' : ''),
        'text-anchor="middle" font-size="11"',
      ),
    );
    out.push(
      text(bx + slot * 0.35, top - 4, s.tokensPerSec.toExponential(2), 'text-anchor="middle" font-size="10"'),
    );
  });
  return out;
}

function sweepPanel(r: BenchReport, x0: number, width: number): string[] {
  const out: string[] = [
    text(x0, 30, 'trace hit rate vs capacity (fraction of working set)', 'font-weight="bold"'),
  ];
  const pts = r.trace.sweep;
  if (pts.length === 0 && r.trace.measured.length === 0) return [...out, text(x0, 80, 'no trace results')];
  const xs = [...pts.map((p) => p.fraction), ...r.trace.measured.map((m) => m.fraction)];
  const lo = Math.log10(Math.min(...xs));
  const hi = Math.log10(Math.max(...xs));
  const x = (f: number): number => x0 + (hi > lo ? ((Math.log10(f) - lo) / (hi - lo)) * width : width / 2);
  const y = (h: number): number => PANEL.top + PANEL.height * (1 - h);
  for (const h of [0, 0.25, 0.5, 0.75, 1]) {
    out.push(`<line x1="${x0}" x2="${x0 + width}" y1="${y(h)}" y2="${y(h)}" stroke="#ddd"/>`);
    out.push(text(x0 - 4, y(h) + 4, `${h * 100}%`, 'text-anchor="end" font-size="10"'));
  }
  for (const p of pts)
    out.push(
      text(
        x(p.fraction),
        PANEL.top + PANEL.height + 16,
        `${+(p.fraction * 100).toFixed(1)}%`,
        'text-anchor="middle" font-size="10"',
      ),
    );
  const series: [string, string, (p: (typeof pts)[number]) => number][] = [
    ['infinite (sim)', '#999', (p) => p.infinite],
    ['Belady (sim)', '#c63', (p) => p.belady],
    ['LRU (sim)', '#57a', (p) => p.lru],
  ];
  series.forEach(([name, color, v], i) => {
    if (pts.length > 0) {
      const d = pts
        .map((p, k) => `${k === 0 ? 'M' : 'L'}${x(p.fraction).toFixed(1)},${y(v(p)).toFixed(1)}`)
        .join(' ');
      out.push(`<path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`);
    }
    out.push(`<rect x="${x0 + 10}" y="${PANEL.top + 8 + i * 16}" width="12" height="3" fill="${color}"/>`);
    out.push(text(x0 + 28, PANEL.top + 13 + i * 16, name, 'font-size="11"'));
  });
  for (const m of r.trace.measured) {
    out.push(`<circle cx="${x(m.fraction).toFixed(1)}" cy="${y(m.hitRate).toFixed(1)}" r="5" fill="#2a7"/>`);
  }
  out.push(`<circle cx="${x0 + 16}" cy="${PANEL.top + 8 + 3 * 16 + 1}" r="4" fill="#2a7"/>`);
  out.push(text(x0 + 28, PANEL.top + 13 + 3 * 16, 'kvfabric (measured, replayed part)', 'font-size="11"'));
  return out;
}

export function renderChart(r: BenchReport): string {
  const body = [
    `<rect width="${W}" height="${H}" fill="white"/>`,
    ...barsPanel(r, 70, 360),
    ...sweepPanel(r, 540, 380),
    text(
      10,
      H - 12,
      `kvfabric bench ${r.startedAt} on ${r.machine.cpus} CPUs, ${r.machine.memoryGiB} GiB (${r.command})`,
      'font-size="10" fill="#666"',
    ),
  ];
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    ...body.map((l) => `  ${l}`),
    '</svg>',
    '',
  ].join('\n');
}
