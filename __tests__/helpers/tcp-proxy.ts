import net from 'node:net';
import type { AddressInfo } from 'node:net';

/** A loopback TCP proxy that a test can cut, to make a real server "go away" mid-request. */
export interface TcpProxy {
  url: string;
  /** Bytes forwarded client → server so far. */
  readonly forwarded: number;
  /** Destroys every connection and stops listening. */
  cut(): Promise<void>;
}

export async function startTcpProxy(target: string, port = 0): Promise<TcpProxy> {
  const { hostname, port: targetPort } = new URL(target);
  const sockets = new Set<net.Socket>();
  let forwarded = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(targetPort), hostname);
    sockets.add(client).add(upstream);
    client.on('data', (chunk) => (forwarded += chunk.length));
    client.pipe(upstream).pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get forwarded() {
      return forwarded;
    },
    cut: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
