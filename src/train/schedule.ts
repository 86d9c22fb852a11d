// Learning-rate schedules of the paper's recipes: step decay at milestones, with an optional warm-up.

export interface Schedule {
  /** Base learning rate (paper: 0.1). */
  lr: number;
  /** Iterations at which the rate is multiplied by `gamma` (CIFAR: 32k, 48k). */
  milestones: number[];
  gamma: number;
  /** Iterations to train in all (CIFAR: 64k). */
  iterations: number;
  /** Optional warm-up: this rate for the first `iterations` (paper appendix: 0.01 for 400 iterations). */
  warmup: { lr: number; iterations: number } | null;
}

export function lrAt(s: Schedule, iteration: number): number {
  if (s.warmup && iteration < s.warmup.iterations) return s.warmup.lr;
  const passed = s.milestones.filter((m) => iteration >= m).length;
  return Number((s.lr * s.gamma ** passed).toPrecision(12)); // 0.001, not 0.0010000000000000002
}

/**
 * The paper's schedule for a family, in iterations. CIFAR: lr 0.1, /10 at 32k and 48k, stop at 64k (batch 128).
 * ImageNet: /10 at epochs 30 and 60, 90 epochs, converted with the number of batches per epoch.
 */
export function paperSchedule(family: 'cifar' | 'imagenet', batchesPerEpoch: number): Schedule {
  if (family === 'cifar') return { lr: 0.1, milestones: [32_000, 48_000], gamma: 0.1, iterations: 64_000, warmup: null };
  return { lr: 0.1, milestones: [30 * batchesPerEpoch, 60 * batchesPerEpoch], gamma: 0.1, iterations: 90 * batchesPerEpoch, warmup: null };
}

/**
 * The paper's milestones (at 50% and 75% of training) for a run of another length: what `--iterations` or
 * `--epochs` without `--milestones` gives. A very short run keeps the distinct ones.
 */
export function scaledMilestones(paper: Schedule, iterations: number): number[] {
  const m = paper.milestones.map((x) => Math.max(1, Math.round((x / paper.iterations) * iterations)));
  return m.filter((x, i) => i === 0 || x > m[i - 1]);
}

/**
 * What is wrong with a schedule, in the flags' words (empty when nothing is): a rate that is not positive
 * trains by gradient ascent or not at all, a factor above 1 raises the rate at each milestone, milestones must
 * increase and fall within the run.
 */
export function scheduleProblems(s: Schedule): string[] {
  const p: string[] = [];
  if (!Number.isSafeInteger(s.iterations) || s.iterations < 1) p.push(`--iterations must be an integer >= 1, got ${s.iterations}`);
  if (!(s.lr > 0) || !Number.isFinite(s.lr)) p.push(`--lr must be a number > 0, got ${s.lr}`);
  if (!(s.gamma > 0 && s.gamma <= 1)) p.push(`--gamma must be a number in (0, 1] (the factor the rate is multiplied by at each milestone), got ${s.gamma}`);
  if (s.milestones.some((m) => !Number.isSafeInteger(m) || m < 1)) p.push(`milestones must be iterations >= 1, got ${s.milestones.join(',')}`);
  else if (s.milestones.some((m, i) => i > 0 && m <= s.milestones[i - 1])) p.push(`milestones must increase, got ${s.milestones.join(',')}`);
  else if (s.milestones.some((m) => m > s.iterations)) p.push(`milestones must lie within the run's ${s.iterations} iterations, got ${s.milestones.join(',')}`);
  if (s.warmup) {
    if (!(s.warmup.lr > 0) || !Number.isFinite(s.warmup.lr)) p.push(`--warmup-lr must be a number > 0, got ${s.warmup.lr}`);
    if (!Number.isSafeInteger(s.warmup.iterations) || s.warmup.iterations < 1) p.push(`--warmup-iterations must be an integer >= 1, got ${s.warmup.iterations}`);
  }
  return p;
}
