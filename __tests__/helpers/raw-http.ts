import net from 'node:net';

/** A raw HTTP/1.1 connection: what a test writes goes to the socket as it is, and what comes back is kept whole. */
export interface RawConnection {
  socket: net.Socket;
  /** Everything the server sent. */
  response(): string;
  /** Resolves with the status line once a final response head arrived (or '' at the deadline / close). */
  status(timeout?: number): Promise<string>;
  write(b: Buffer | string): Promise<void>;
  closed: Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Opens a raw HTTP/1.1 connection to 127.0.0.1:`port`. */
export function rawConnection(port: number): RawConnection {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let text = '';
  socket.on('data', (d) => (text += d.toString('latin1')));
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  const finalStatus = () => {
    // Skip interim (1xx) responses.
    for (const block of text.split('\r\n\r\n')) {
      const line = block.split('\r\n')[0];
      if (/^HTTP\/1\.1 [2-5]\d\d/.test(line)) return line;
    }
    return '';
  };
  return {
    socket,
    closed,
    response: () => text,
    async status(timeout = 10_000) {
      const deadline = Date.now() + timeout;
      let isClosed = false;
      void closed.then(() => (isClosed = true));
      while (!finalStatus() && !isClosed && Date.now() < deadline) await sleep(5);
      return finalStatus();
    },
    write: (b) => new Promise<void>((r) => socket.write(b, () => r())),
  };
}
