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
  /**
   * Goes silent: nothing more is forwarded either way and new connections are held, but nothing is closed
   * (a network partition, a peer that froze). `resume()` forwards again what waited.
   */
  stall(): void;
  resume(): void;
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
  let stalled = false;
  const pairs: { client: net.Socket; upstream: net.Socket }[] = [];
  const held: net.Socket[] = [];
  const onClient = (client: net.Socket) => {
    if (stalled) {
      client.pause();
      held.push(client);
      sockets.add(client);
      return;
    }
    connect(client);
  };
  const connect = (client: net.Socket) => {
    const upstream = net.connect(Number(targetPort), hostname);
    sockets.add(client).add(upstream);
    pairs.push({ client, upstream });
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
    stall: () => {
      stalled = true;
      for (const { client, upstream } of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    resume: () => {
      stalled = false;
      for (const { client, upstream } of pairs) {
        if (client.destroyed || upstream.destroyed) continue;
        client.pipe(upstream);
        upstream.pipe(client);
      }
      for (const client of held.splice(0)) if (!client.destroyed) connect(client);
    },
    cut: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
