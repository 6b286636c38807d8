/**
 * Data-parallel training's rules, without MPI itself: the few collective calls training needs
 * ({@linkcode Collective}, implemented over MPI by lib/io/mpi_deno.ts and trivially by
 * {@linkcode SINGLE_PROCESS}), which micro-batches a rank takes, and {@linkcode Ranks}, the
 * agreement that keeps every rank on the same path: at each sync point every rank says whether it
 * is fine, asks to stop (a signal) or failed, and a failure on one rank becomes the same error, with
 * the same exit status, on all of them (docs/data-parallel.md).
 * @module
 */

/** The collective calls training uses; every rank calls them in the same order. */
export interface Collective {
  /** This process's rank, 0 ≤ rank < size. */
  readonly rank: number;
  /** How many processes take part. */
  readonly size: number;
  /** Sums `buf` element-wise over all ranks, in place (MPI_Allreduce with MPI_SUM). */
  allreduceSum(buf: Float32Array): void;
  /** Copies `root`'s `buf` into every rank's (MPI_Bcast of bytes); same length everywhere. */
  broadcast(buf: Uint8Array, root: number): void;
}

/** One process alone: the collectives are the identity. */
export const SINGLE_PROCESS: Collective = {
  rank: 0,
  size: 1,
  allreduceSum() {},
  broadcast() {},
};

/**
 * The micro-batches of one optimizer step that rank `rank` of `size` computes: of the step's
 * `size`·G micro-batches (G = --grad_acc), rank k takes micro-batch k of each group of `size`,
 * so N ranks at --grad_acc=G take the steps one process takes at --grad_acc=N·G.
 */
export function rankShare<T>(all: readonly T[], rank: number, size: number): T[] {
  return all.filter((_, i) => i % size === rank);
}

/** The global index (in the step's list) of a rank's j-th micro-batch (see {@linkcode rankShare}). */
export function globalIndex(j: number, rank: number, size: number): number {
  return j * size + rank;
}

/** A failure agreed by all ranks: the failed rank's message and exit status, on every rank. */
export class RankError extends Error {
  /**
   * @param message the failed rank's one-line message
   * @param exitCode the status every rank exits with
   * @param failedRank the lowest rank that failed
   * @param original on the failed rank itself, the error it threw
   */
  constructor(
    message: string,
    readonly exitCode: number,
    readonly failedRank: number,
    readonly original?: unknown,
  ) {
    super(message);
    this.name = "RankError";
  }
}

/** Bytes of a failure message on the wire (longer ones are cut). */
const MESSAGE_BYTES = 4096;

/** What a rank reports at a sync point besides its stop request ({@linkcode Ranks.localStop}). */
export interface RankWord {
  /** This rank failed with this error. */
  error?: unknown;
}

/**
 * The agreement between ranks. Invariant: while every rank is healthy, all call the same sequence
 * of {@linkcode agree} and payload collectives; a rank that fails anywhere calls {@linkcode agree}
 * with its error as its next collective, which meets the others at their next sync point. So a
 * payload collective must directly follow an agree with nothing that can fail in between.
 */
export class Ranks {
  /** Whether some rank asked to stop at a sync point so far (it stays so). */
  stopAgreed = false;
  /** The stop code (a signal's number) of the lowest rank that asked, once one did. */
  stopCode = 0;
  /**
   * This rank's stop request, read at every sync point: 0 for none, else a positive code (the
   * CLI gives the signal's number, so every rank can exit with the same status).
   */
  localStop: () => number = () => 0;

  /**
   * @param world the collective calls
   * @param exitCodeOf the exit status a failure maps to (the CLI's: 2 bad input, 3 NaN or lost
   *   device, 1 otherwise)
   */
  constructor(readonly world: Collective, readonly exitCodeOf: (e: unknown) => number) {}

  /** This rank's number. */
  get rank(): number {
    return this.world.rank;
  }

  /** How many ranks take part. */
  get size(): number {
    return this.world.size;
  }

  /** Rank 0 alone writes the run folder, the log and the adapter. */
  get writes(): boolean {
    return this.world.rank === 0;
  }

  /**
   * A sync point. Returns whether any rank asks to stop (also kept in {@linkcode stopAgreed});
   * throws, on every rank, a {@linkcode RankError} carrying the failure of the lowest failed rank.
   * With one process a failure is rethrown as it is.
   */
  agree(word: RankWord = {}): boolean {
    const { rank, size } = this.world;
    const local = this.localStop();
    if (size === 1) {
      if (word.error !== undefined) throw word.error;
      if (local > 0 && !this.stopAgreed) this.stopCode = local;
      return (this.stopAgreed ||= local > 0);
    }
    const s = new Float32Array(2 * size);
    s[rank] = word.error !== undefined ? 1 : 0;
    s[size + rank] = local;
    this.world.allreduceSum(s);
    const failed = [...s.subarray(0, size)].findIndex((x) => x > 0);
    if (failed >= 0) {
      const msg = new Uint8Array(MESSAGE_BYTES);
      if (rank === failed) {
        const e = word.error;
        if (e instanceof RankError) throw e;
        // Cut to a length whose JSON (even all escaped multi-byte) fits the wire.
        const text = JSON.stringify({
          message: errorLine(e).slice(0, MESSAGE_BYTES / 8),
          code: this.exitCodeOf(e),
        });
        msg.set(new TextEncoder().encode(text));
      }
      this.world.broadcast(msg, failed);
      const end = msg.indexOf(0);
      const got = JSON.parse(new TextDecoder().decode(end < 0 ? msg : msg.subarray(0, end)));
      throw new RankError(
        got.message,
        got.code,
        failed,
        rank === failed ? word.error : undefined,
      );
    }
    // A stop once agreed stays: the run ends after the step it was agreed at.
    const asked = [...s.subarray(size)].find((x) => x > 0);
    if (asked !== undefined && !this.stopAgreed) this.stopCode = asked;
    return (this.stopAgreed ||= asked !== undefined);
  }

  /**
   * Sums `values` over ranks after a sync point (`word` is this rank's); the payload is the
   * caller's, computed before the call, so nothing can fail between the two collectives.
   */
  sum(values: Float32Array, word: RankWord = {}): Float32Array {
    this.agree(word);
    if (this.world.size > 1) this.world.allreduceSum(values);
    return values;
  }

  /**
   * Checks that every rank runs with the same inputs: rank 0's `facts` (what → digest) are sent
   * to all and compared with theirs; the first difference fails every rank with a line naming
   * it.
   */
  checkSame(facts: readonly (readonly [string, string])[]): void {
    this.agree();
    if (this.world.size === 1) return;
    const text = new TextEncoder().encode(JSON.stringify(facts));
    const len = new Uint8Array(4);
    new DataView(len.buffer).setUint32(0, text.length, true);
    this.world.broadcast(len, 0);
    const n = new DataView(len.buffer).getUint32(0, true);
    const buf = new Uint8Array(n);
    if (this.world.rank === 0) buf.set(text);
    this.world.broadcast(buf, 0);
    const theirs = new Map<string, string>(JSON.parse(new TextDecoder().decode(buf)));
    let diff: string | undefined;
    for (const [what, mine] of facts) {
      const t = theirs.get(what);
      if (t !== mine) {
        diff = t === undefined
          ? `rank ${this.world.rank} has ${what}, which rank 0 does not`
          : `rank ${this.world.rank}'s ${what} differs from rank 0's (${mine} vs ${t})`;
        break;
      }
    }
    if (diff === undefined && theirs.size !== facts.length) {
      const missing = [...theirs.keys()].find((k) => !facts.some(([w]) => w === k));
      diff = `rank ${this.world.rank} lacks ${missing}, which rank 0 has`;
    }
    this.agree({ error: diff === undefined ? undefined : new RankMismatchError(diff) });
  }
}

/** Ranks that do not run the same flags, model or data: bad input (exit status 2). */
export class RankMismatchError extends Error {
  /** @param message what differs */
  constructor(message: string) {
    super(message);
    this.name = "RankMismatchError";
  }
}

/** An error as its one line (the message, without the class name or stack). */
function errorLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split("\n")[0];
}
