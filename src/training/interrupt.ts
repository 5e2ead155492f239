/**
 * Ctrl-C for the training loops (`diffuse train`, `diffuse train-classifier`): the first
 * SIGINT asks the loop to stop after its current step (it then writes a checkpoint and
 * returns), a second one quits at once, without a checkpoint. The commands exit with
 * INTERRUPTED_EXIT_CODE (130, the shell's code for a SIGINT) after a stop.
 *
 * A handler runs only when the loop yields to the event loop: call `await yieldToEventLoop()`
 * between steps.
 *
 * @example
 *   const off = onCtrlC(() => (stop = true), { log, message: () => `\nCtrl-C: stopping after step ${step}\n` });
 *   try {
 *     while (!stop && step < steps) { trainStep(); await yieldToEventLoop(); }
 *   } finally {
 *     off();
 *   }
 */

/** The exit status of a command stopped by Ctrl-C (128 + SIGINT, as a shell reports it). */
export const INTERRUPTED_EXIT_CODE = 130;

/**
 * Installs the SIGINT handler: the first Ctrl-C writes `message()` to `log` and calls
 * `stop`; a second exits the process with INTERRUPTED_EXIT_CODE. Returns the function
 * that removes the handler.
 */
export function onCtrlC(stop: () => void, { log, message }: { log: NodeJS.WritableStream | null; message: () => string }): () => void {
  let stopping = false;
  const handler = () => {
    if (stopping) {
      log?.write('\nsecond Ctrl-C: quitting without a checkpoint\n');
      process.exit(INTERRUPTED_EXIT_CODE);
    }
    stopping = true;
    log?.write(message());
    stop();
  };
  process.on('SIGINT', handler);
  return () => {
    process.off('SIGINT', handler);
  };
}

/** Resolves after pending I/O and signal handlers have run (setImmediate): lets a Ctrl-C reach a loop. */
export function yieldToEventLoop(): Promise<void> {
  return new Promise<void>((resolve) => setImmediate(resolve));
}
