/**
 * Python `str` semantics that the metrics must reproduce bit for bit (nltk, rouge_score and the
 * reference's scoring script are Python): Python's whitespace set, `\w` and lengths counted in
 * code points. JavaScript's `\s` and `.length` differ from Python's on exactly the texts a
 * dialogue model produces (emoji, U+0085, U+FEFF), so the metrics use these instead.
 * @module
 */

/**
 * Python's `str.isspace()` set, as the body of a regex character class. JavaScript's `\s` lacks
 * \x1c-\x1f and \x85 and adds \ufeff.
 */
export const PY_WS = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029" +
  "\\u202f\\u205f\\u3000";
/** One Python whitespace character (`\s` of a Python str pattern), for `u`-flag regexes. */
export const PY_S = `[${PY_WS}]`;
/** One Python non-whitespace character (`\S`), for `u`-flag regexes. */
export const PY_NS = `[^${PY_WS}]`;
/** Python's Unicode `\w` (str.isalnum() or "_"), for `u`-flag regexes. */
export const PY_W = "[\\p{L}\\p{N}_]";
/**
 * Python's `[^\W\d]`: a word character that is not a decimal digit (`\d` is category Nd), i.e.
 * letters, other numerals (Nl, No such as "²" or "Ⅻ") and "_".
 */
export const PY_W_NOT_DIGIT = "[\\p{L}\\p{Nl}\\p{No}_]";

const SPLIT_RE = new RegExp(`${PY_S}+`, "u");
const LSTRIP_RE = new RegExp(`^${PY_S}+`, "u");
const RSTRIP_RE = new RegExp(`${PY_S}+$`, "u");

/** Python `s.split()`: split on runs of whitespace, dropping empty strings. */
export function pySplit(s: string): string[] {
  return s.split(SPLIT_RE).filter((t) => t.length > 0);
}

/** Python `s.strip()`. */
export function pyStrip(s: string): string {
  return s.replace(LSTRIP_RE, "").replace(RSTRIP_RE, "");
}

/** Python `s.rstrip()`. */
export function pyRstrip(s: string): string {
  return s.replace(RSTRIP_RE, "");
}

/**
 * Python `len(s)`: the number of code points. A character outside the BMP (an emoji) is one
 * code point but two UTF-16 code units, so `s.length` would count it twice.
 */
export function pyLen(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A high surrogate followed by a low one is a single code point; a lone surrogate counts
    // once, as Python counts it.
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
    n++;
  }
  return n;
}

/** Python `s[0]`: the first code point (as a string), "" for an empty string. */
export function pyFirst(s: string): string {
  const c = s.codePointAt(0);
  return c === undefined ? "" : String.fromCodePoint(c);
}

/**
 * Python `c.isupper()` for one character: the Unicode Uppercase property (Lu and Other_Uppercase,
 * e.g. "Ⓐ"), which differs from "has a lowercase mapping".
 */
export function pyIsUpper(c: string): boolean {
  return /^\p{Uppercase}$/u.test(c);
}

/** Python `c.islower()` for one character: the Unicode Lowercase property (Ll, "ª", "ˢ", ...). */
export function pyIsLower(c: string): boolean {
  return /^\p{Lowercase}$/u.test(c);
}
