import net from 'node:net';
import type { AddressInfo } from 'node:net';
import tls from 'node:tls';

/** A loopback TCP proxy that a test can cut, to make a real server "go away" mid-request. */
export interface TcpProxy {
  url: string;
  /** Bytes forwarded client → server so far. */
  readonly forwarded: number;
  /** What each connection sent client → server so far (in clear: with `tls`, the proxy ends TLS). */
  sent(): Buffer[];
  /** Destroys every connection and stops listening. */
  cut(): Promise<void>;
}

export interface TcpProxyOptions {
  /** End TLS here with this key and certificate (the url is then https://); the server behind is spoken to in clear. */
  tls?: { key: Buffer; cert: Buffer };
  /** Keep every byte each connection sends, for `sent()`. */
  record?: boolean;
}

export async function startTcpProxy(target: string, port = 0, options: TcpProxyOptions = {}): Promise<TcpProxy> {
  const { hostname, port: targetPort } = new URL(target);
  const sockets = new Set<net.Socket>();
  const recorded: Buffer[][] = [];
  let forwarded = 0;
  const onClient = (client: net.Socket) => {
    const upstream = net.connect(Number(targetPort), hostname);
    sockets.add(client).add(upstream);
    const chunks: Buffer[] = [];
    if (options.record) recorded.push(chunks);
    client.on('data', (chunk: Buffer) => {
      forwarded += chunk.length;
      if (options.record) chunks.push(chunk);
    });
    client.pipe(upstream).pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  };
  const server = options.tls ? tls.createServer(options.tls, onClient) : net.createServer(onClient);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get forwarded() {
      return forwarded;
    },
    sent: () => recorded.map((chunks) => Buffer.concat(chunks)),
    cut: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
