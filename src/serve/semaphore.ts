// A counting semaphore with a bounded waiting line: caps concurrent image decodes (each can hold a large
// decoded image in memory) and refuses, rather than queues without end, when too many are waiting.

export class Semaphore {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly max: number,
    readonly maxWaiting: number,
  ) {}

  get busy(): number {
    return this.active;
  }

  /** Runs fn when a slot is free; throws `whenFull()` at once if the waiting line is full. */
  async use<T>(fn: () => Promise<T>, whenFull: () => Error): Promise<T> {
    if (this.active >= this.max) {
      if (this.waiting.length >= this.maxWaiting) throw whenFull();
      await new Promise<void>((r) => this.waiting.push(r));
    } else this.active++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next();
      else this.active--;
    }
  }
}
