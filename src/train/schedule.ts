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
