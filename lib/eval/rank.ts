/**
 * Rank analysis of weight updates for the paper's rank figures (docs/reference.md, Paper results
 * we compare with), which the reference implementation left as stubs: singular values in f64,
 * numerical rank (numpy `matrix_rank` tolerance), effective rank (Roy & Vetterli 2007), the
 * count of singular values above a threshold (Fig. 4 uses 0.005) and the squared Frobenius norm
 * (Fig. 5).
 * @module
 */

/** Overflow-safe √(x² + y²) without Math.hypot's variadic cost. */
function hypot(x: number, y: number): number {
  let a = Math.abs(x);
  let b = Math.abs(y);
  if (a < b) [a, b] = [b, a];
  if (a === 0) return 0;
  const r = b / a;
  return a * Math.sqrt(1 + r * r);
}

/** 2-norm of v[from..to), scaled only when the plain sum of squares over- or underflows. */
function norm2(v: Float64Array, from: number, to: number): number {
  let ss = 0;
  for (let i = from; i < to; i++) ss += v[i] * v[i];
  if (ss > 1e-290 && ss < 1e290) return Math.sqrt(ss);
  let scale = 0;
  for (let i = from; i < to; i++) scale = Math.max(scale, Math.abs(v[i]));
  if (scale === 0) return 0;
  ss = 0;
  for (let i = from; i < to; i++) ss += (v[i] / scale) ** 2;
  return scale * Math.sqrt(ss);
}

/**
 * Singular values of a column-major m×n matrix with m ≥ n (destroys `a`): Householder
 * bidiagonalisation then implicit-shift QR on the bidiagonal (Golub-Kahan-Reinsch, following
 * LINPACK dsvdc as in JAMA), values only.
 */
function svdValuesColMajor(a: Float64Array, m: number, n: number): Float64Array {
  const s = new Float64Array(n);
  const e = new Float64Array(n);
  const work = new Float64Array(m);
  const nct = Math.min(m - 1, n);
  const nrt = Math.max(0, Math.min(n - 2, m));
  for (let k = 0; k < Math.max(nct, nrt); k++) {
    const ck = k * m;
    if (k < nct) {
      // Left Householder reflection zeroing column k below the diagonal.
      let nrm = norm2(a, ck + k, ck + m);
      if (nrm !== 0) {
        if (a[ck + k] < 0) nrm = -nrm;
        for (let i = k; i < m; i++) a[ck + i] /= nrm;
        a[ck + k] += 1;
      }
      s[k] = -nrm;
    }
    for (let j = k + 1; j < n; j++) {
      const cj = j * m;
      if (k < nct && s[k] !== 0) {
        let t = 0;
        for (let i = k; i < m; i++) t += a[ck + i] * a[cj + i];
        t = -t / a[ck + k];
        for (let i = k; i < m; i++) a[cj + i] += t * a[ck + i];
      }
      e[j] = a[cj + k];
    }
    if (k < nrt) {
      // Right Householder reflection zeroing row k right of the superdiagonal.
      let nrm = norm2(e, k + 1, n);
      if (nrm !== 0) {
        if (e[k + 1] < 0) nrm = -nrm;
        for (let i = k + 1; i < n; i++) e[i] /= nrm;
        e[k + 1] += 1;
      }
      e[k] = -nrm;
      if (k + 1 < m && nrm !== 0) {
        work.fill(0, k + 1, m);
        for (let j = k + 1; j < n; j++) {
          const cj = j * m;
          const ej = e[j];
          for (let i = k + 1; i < m; i++) work[i] += ej * a[cj + i];
        }
        for (let j = k + 1; j < n; j++) {
          const cj = j * m;
          const t = -e[j] / e[k + 1];
          for (let i = k + 1; i < m; i++) a[cj + i] += t * work[i];
        }
      }
    }
  }

  let p = n;
  if (nct < n) s[nct] = a[nct * m + nct];
  if (m < p) s[p - 1] = 0;
  if (nrt + 1 < p) e[nrt] = a[(p - 1) * m + nrt];
  e[p - 1] = 0;

  const pp = p - 1;
  const eps = 2 ** -52;
  const tiny = 2 ** -966;
  // LAPACK allows 6n² inner steps; convergence normally takes about 2 per singular value.
  const maxSteps = Math.max(100, 6 * n * n);
  let steps = 0;
  while (p > 0) {
    let k: number;
    let kase: number;
    for (k = p - 2; k >= 0; k--) {
      if (Math.abs(e[k]) <= tiny + eps * (Math.abs(s[k]) + Math.abs(s[k + 1]))) {
        e[k] = 0;
        break;
      }
    }
    if (k === p - 2) {
      kase = 4;
    } else {
      let ks: number;
      for (ks = p - 1; ks > k; ks--) {
        const t = (ks !== p ? Math.abs(e[ks]) : 0) + (ks !== k + 1 ? Math.abs(e[ks - 1]) : 0);
        if (Math.abs(s[ks]) <= tiny + eps * t) {
          s[ks] = 0;
          break;
        }
      }
      if (ks === k) kase = 3;
      else if (ks === p - 1) kase = 1;
      else {
        kase = 2;
        k = ks;
      }
    }
    k++;

    if (kase === 1) {
      // Deflate a negligible s[p-1].
      let f = e[p - 2];
      e[p - 2] = 0;
      for (let j = p - 2; j >= k; j--) {
        const t = hypot(s[j], f);
        const cs = s[j] / t;
        const sn = f / t;
        s[j] = t;
        if (j !== k) {
          f = -sn * e[j - 1];
          e[j - 1] = cs * e[j - 1];
        }
      }
    } else if (kase === 2) {
      // Split at a negligible s[k-1].
      let f = e[k - 1];
      e[k - 1] = 0;
      for (let j = k; j < p; j++) {
        const t = hypot(s[j], f);
        const cs = s[j] / t;
        const sn = f / t;
        s[j] = t;
        f = -sn * e[j];
        e[j] = cs * e[j];
      }
    } else if (kase === 3) {
      // One implicit QR step with the Wilkinson-like shift from the trailing 2×2.
      if (++steps > maxSteps) throw new Error("singularValues: QR iteration did not converge");
      const scale = Math.max(
        Math.abs(s[p - 1]),
        Math.abs(s[p - 2]),
        Math.abs(e[p - 2]),
        Math.abs(s[k]),
        Math.abs(e[k]),
      );
      const sp = s[p - 1] / scale;
      const spm1 = s[p - 2] / scale;
      const epm1 = e[p - 2] / scale;
      const sk = s[k] / scale;
      const ek = e[k] / scale;
      const b = ((spm1 + sp) * (spm1 - sp) + epm1 * epm1) / 2;
      const c = sp * epm1 * (sp * epm1);
      let shift = 0;
      if (b !== 0 || c !== 0) {
        shift = Math.sqrt(b * b + c);
        if (b < 0) shift = -shift;
        shift = c / (b + shift);
      }
      let f = (sk + sp) * (sk - sp) + shift;
      let g = sk * ek;
      for (let j = k; j < p - 1; j++) {
        let t = hypot(f, g);
        let cs = f / t;
        let sn = g / t;
        if (j !== k) e[j - 1] = t;
        f = cs * s[j] + sn * e[j];
        e[j] = cs * e[j] - sn * s[j];
        g = sn * s[j + 1];
        s[j + 1] = cs * s[j + 1];
        t = hypot(f, g);
        cs = f / t;
        sn = g / t;
        s[j] = t;
        f = cs * e[j] + sn * s[j + 1];
        s[j + 1] = -sn * e[j] + cs * s[j + 1];
        g = sn * e[j + 1];
        e[j + 1] = cs * e[j + 1];
      }
      e[p - 2] = f;
    } else {
      // Converged: make s[k] non-negative and bubble it into descending order.
      if (s[k] <= 0) s[k] = s[k] < 0 ? -s[k] : 0;
      while (k < pp && s[k] < s[k + 1]) {
        [s[k], s[k + 1]] = [s[k + 1], s[k]];
        k++;
      }
      p--;
    }
  }
  return s;
}

/**
 * Singular values of the row-major `rows`×`cols` matrix `m`, descending, computed in f64
 * (min(rows, cols) values). Householder bidiagonalisation plus implicit-shift QR: backward stable,
 * so each σ is accurate to about ε·σ_max·√n in absolute terms (what numerical rank needs).
 * Cost ≈ 4·max·min² − 4/3·min³ flops (~2.5 GFLOP/s here) and one f64 copy: measured 0.9 s for
 * 1024×1024, 7 s for 4096×1024 and 9 s for 2048×2048 on one core; a 4096×4096 projection takes
 * ~1.5 min and a Llama-3-8B MLP matrix (4096×14336, 470 MB copy) ~6 min, so sample layers there.
 */
export function singularValues(
  m: ArrayLike<number>,
  rows: number,
  cols: number,
): Float64Array {
  if (!(Number.isInteger(rows) && Number.isInteger(cols) && rows >= 0 && cols >= 0)) {
    throw new RangeError(`singularValues: bad shape ${rows}×${cols}`);
  }
  if (m.length !== rows * cols) {
    throw new RangeError(`singularValues: ${m.length} values for a ${rows}×${cols} matrix`);
  }
  if (rows === 0 || cols === 0) return new Float64Array(0);
  // The algorithm needs tall input; row-major data of a wide matrix is already its transpose in
  // column-major order, and a tall one is transposed on copy.
  const tall = rows >= cols;
  const M = tall ? rows : cols;
  const N = tall ? cols : rows;
  const a = new Float64Array(rows * cols);
  if (tall) {
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < cols; j++) a[j * rows + i] = m[i * cols + j];
    }
  } else {
    for (let i = 0; i < a.length; i++) a[i] = m[i];
  }
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) throw new RangeError("singularValues: non-finite entry");
  }
  const s = svdValuesColMajor(a, M, N);
  return s.sort().reverse();
}

/** Options of {@link rankStats}. */
export interface RankOptions {
  /** Absolute threshold for `countAbove` (Fig. 4 of the paper counts σ > 0.005). Default 0.005. */
  threshold?: number;
  /**
   * Relative tolerance: rank counts σ > relTol·σ_max. When absent, numpy's `matrix_rank` default
   * σ_max·max(rows, cols)·eps is used.
   */
  relTol?: number;
  /** The matrix shape for the numpy tolerance; defaults to a square min(rows, cols) matrix. */
  shape?: readonly [number, number];
  /**
   * Machine epsilon of the numpy tolerance: the precision the matrix was stored in
   * ("f32": 2⁻²³, the dtype of our tensors and of a torch f32 ΔW; "f64": 2⁻⁵²). Default "f32".
   */
  dtype?: "f32" | "f64";
  /** How many leading singular values to return in `top`. Default 10. */
  topK?: number;
}

/** Rank summaries of one spectrum. */
export interface RankStats {
  /** Numerical rank: the number of σ above `tolerance`. */
  rank: number;
  /** The tolerance `rank` used. */
  tolerance: number;
  /** exp(−Σ p_i log p_i) with p_i = σ_i / Σσ (Roy & Vetterli 2007); 0 for a zero matrix. */
  effectiveRank: number;
  /** Number of σ > `threshold`. */
  countAbove: number;
  /** The absolute threshold `countAbove` used. */
  threshold: number;
  /** Σσ² = ‖ΔW‖_F² (the paper's Fig. 5 quantity). */
  sumSquares: number;
  /** The `topK` largest singular values, descending. */
  top: number[];
}

/**
 * Rank statistics of a spectrum as returned by {@link singularValues} (any order accepted).
 * `rank` follows numpy/torch `matrix_rank`: σ > σ_max·max(M, N)·eps unless `relTol` is given.
 */
export function rankStats(sv: ArrayLike<number>, opts: RankOptions = {}): RankStats {
  const s = Float64Array.from(sv).sort().reverse();
  const { threshold = 0.005, topK = 10, dtype = "f32" } = opts;
  const [rows, cols] = opts.shape ?? [s.length, s.length];
  const smax = s.length > 0 ? s[0] : 0;
  const eps = dtype === "f32" ? 2 ** -23 : 2 ** -52;
  const tolerance = opts.relTol !== undefined
    ? opts.relTol * smax
    : smax * Math.max(rows, cols) * eps;
  let rank = 0;
  let countAbove = 0;
  let total = 0;
  let sumSquares = 0;
  for (const v of s) {
    if (v > tolerance) rank++;
    if (v > threshold) countAbove++;
    total += v;
    sumSquares += v * v;
  }
  let entropy = 0;
  if (total > 0) {
    for (const v of s) {
      const p = v / total;
      // 0·log 0 = 0 by continuity.
      if (p > 0) entropy -= p * Math.log(p);
    }
  }
  return {
    rank,
    tolerance,
    effectiveRank: total > 0 ? Math.exp(entropy) : 0,
    countAbove,
    threshold,
    sumSquares,
    top: Array.from(s.subarray(0, Math.min(topK, s.length))),
  };
}

/** Shapes of one adapted linear layer: A is [r, in], B is [out, r], W0 is [out, in]. */
export interface DeltaDims {
  inFeatures: number;
  outFeatures: number;
  r: number;
}

/**
 * The weight update ΔW [out, in] in f64: HiRA W0 ⊙ (B·A) (rank up to rank(W0)·r), LoRA
 * scale·B·A (rank ≤ r; scale = α/r, ignored for HiRA, whose reference never scales).
 */
export function deltaWeight(
  type: "HIRA" | "LORA",
  w0: ArrayLike<number> | null,
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  d: DeltaDims,
  scale = 1,
): Float64Array {
  const { inFeatures: K, outFeatures: O, r } = d;
  if (a.length !== r * K || b.length !== O * r) {
    throw new RangeError(`deltaWeight: A ${a.length} / B ${b.length} do not fit ${O}×${r}×${K}`);
  }
  if (type === "HIRA" && (w0 === null || w0.length !== O * K)) {
    throw new RangeError("deltaWeight: HiRA needs W0 of out×in values");
  }
  const out = new Float64Array(O * K);
  for (let o = 0; o < O; o++) {
    for (let k = 0; k < r; k++) {
      const bok = b[o * r + k];
      if (bok === 0) continue;
      for (let i = 0; i < K; i++) out[o * K + i] += bok * a[k * K + i];
    }
    for (let i = 0; i < K; i++) {
      out[o * K + i] *= type === "HIRA" ? w0![o * K + i] : scale;
    }
  }
  return out;
}
