/**
 * Plain-loop CPU reference for matmul (forward and backward), in f64.
 * @module
 */

/** Layout flags of {@linkcode matmulRef}. */
export interface MatmulRefOptions {
  /** a is stored [K, M] and used as aᵀ. */
  transA?: boolean;
  /** b is stored [N, K] and used as bᵀ. */
  transB?: boolean;
}

/** C[M,N] = op(A)·op(B) with A [M,K] (or [K,M] if transA) and B [K,N] (or [N,K] if transB). */
export function matmulRef(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
  opts: MatmulRefOptions = {},
): Float64Array {
  const { transA = false, transB = false } = opts;
  const c = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) {
        const av = transA ? a[k * M + m] : a[m * K + k];
        const bv = transB ? b[n * K + k] : b[k * N + n];
        s += av * bv;
      }
      c[m * N + n] = s;
    }
  }
  return c;
}

/**
 * Gradients of C = op(A)·op(B) given dC [M,N], followed by {@linkcode matmulRef}'s parameters:
 * dA in a's storage layout and dB in b's. With transA, dA (stored [K,M]) = op(B)·dCᵀ; otherwise
 * dA = dC·op(B)ᵀ. Likewise for dB.
 */
export function matmulBackwardRef(
  dc: ArrayLike<number>,
  ...product: Parameters<typeof matmulRef>
): { da: Float64Array; db: Float64Array } {
  const [a, b, M, N, K, opts = {}] = product;
  const { transA = false, transB = false } = opts;
  const da = new Float64Array(M * K);
  const db = new Float64Array(K * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const g = dc[m * N + n];
      for (let k = 0; k < K; k++) {
        const ai = transA ? k * M + m : m * K + k;
        const bi = transB ? n * K + k : k * N + n;
        da[ai] += g * b[bi];
        db[bi] += g * a[ai];
      }
    }
  }
  return { da, db };
}
