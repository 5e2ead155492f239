/**
 * The one error type of src/data/: a dataset that is missing, empty or corrupt.
 * It names the file (or folder) and says what is wrong with it, so a user can fix
 * it without reading the code.
 *
 * @example
 *   try { readIdx('x.gz'); } catch (e) { if (e instanceof DatasetError) console.error(e.file, e.message); }
 */
export class DatasetError extends Error {
  override name = 'DatasetError';
  /** The file or folder at fault. */
  readonly file: string;
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.file = file;
  }
}
