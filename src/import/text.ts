// English for the importers' messages: counts with the right plural, and "a" or "an" before a class name.

/** `1 entry`, `3 entries`, `0 bytes`: a count with its noun (plural: the noun + 's' unless given). */
export function count(n: number, singular: string, plural = `${singular}s`): string {
  return `${n} ${n === 1 ? singular : plural}`;
}

/** `is` or `are` for a count. */
export function isAre(n: number): 'is' | 'are' {
  return n === 1 ? 'is' : 'are';
}

/**
 * `a nn.X` reads "an en-en X": the article for a word as it is spoken. Abbreviations (all capitals, or a first
 * part without vowels: `nn`, `tds`, `SE`) are spelt out letter by letter; other words go by their first vowel.
 */
export function article(word: string): 'a' | 'an' {
  const first = /^[A-Za-z]*/.exec(word.trim())?.[0] ?? '';
  if (first === '') return 'a';
  const spelt = /^[A-Z]+$/.test(first) || !/[aeiouy]/i.test(first) || /^nn/i.test(first);
  // Letters whose names start with a vowel sound: A, E, F, H, I, L, M, N, O, R, S, X.
  if (spelt) return /^[aefhilmnorsx]/i.test(first) ? 'an' : 'a';
  if (/^(uni|use|usu|uti|one|eu)/i.test(first)) return 'a';
  return /^[aeiou]/i.test(first) ? 'an' : 'a';
}

/** `a torch.FloatTensor`, `an nn.SpatialDropout`. */
export function withArticle(word: string): string {
  return `${article(word)} ${word}`;
}
