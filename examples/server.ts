// `npm start`: the demo server. Reads the environment (see README "Demo server"), starts the S3 backend
// if asked, listens, and shuts down gracefully on SIGINT/SIGTERM.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createDemoApp, type DemoApp } from './app';
import { ConfigError, loadConfig, type DemoConfig } from './config';
import type { S3Backend } from './s3';

export interface RunningDemo {
  server: Server;
  demo: DemoApp;
  /** http://localhost:PORT when bound to loopback or every interface. */
  url: string;
  /** STORAGE=s3: the endpoint objects go to (the local server's when S3_ENDPOINT was unset). */
  s3Endpoint?: string;
  /**
   * Stops accepting, gives in-flight uploads `config.shutdownTimeout` ms, aborts the rest (the library
   * then removes their partial files), removes every stored file and stops the local S3 server.
   */
  shutdown(): Promise<void>;
}

export async function startDemoServer(config: DemoConfig, log: (line: string) => void = console.log): Promise<RunningDemo> {
  // Loaded only for STORAGE=s3: the AWS SDK is slow to load and noisy on Node 20.
  const s3: S3Backend | undefined = config.storage === 's3' ? await (await import('./s3')).openS3(config.s3, log) : undefined;
  let demo: DemoApp;
  let server: Server;
  try {
    demo = createDemoApp(config, { s3, log });
    server = await listen(demo.app, config.host, config.port);
  } catch (err) {
    await s3?.stop();
    throw err;
  }
  const { port } = server.address() as AddressInfo;
  const local = ['127.0.0.1', '::1', 'localhost', '0.0.0.0', '::'].includes(config.host);
  const url = `http://${local ? 'localhost' : config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;

  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> => (stopping ??= stop()); // a second signal or call waits for the first
  const stop = async (): Promise<void> => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve())); // no new connections
    server.closeIdleConnections();
    if (!(await demo.drain(config.shutdownTimeout))) {
      log(`[shutdown] uploads still running after ${config.shutdownTimeout} ms: aborting them`);
      server.closeAllConnections();
      // Aborted requests still run to next(err), which happens after their partial files are removed.
      await demo.drain(5000);
    }
    server.closeAllConnections(); // downloads and idle keep-alive sockets
    await closed;
    try {
      await demo.close();
    } finally {
      await s3?.stop();
    }
  };
  return { server, demo, url, s3Endpoint: s3?.endpoint, shutdown };
}

function listen(app: DemoApp['app'], host: string, port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host);
    server.once('listening', () => resolve(server)).once('error', reject);
  });
}

function describe(config: DemoConfig, url: string, s3Endpoint: string | undefined): string {
  const mib = (bytes: number) => `${+(bytes / 2 ** 20).toFixed(2)} MiB`;
  const rollover = config.storage === 's3' ? `s3 bucket ${config.s3.bucket} at ${s3Endpoint}` : `disk in ${config.uploadDir}`;
  return (
    `express-spool demo on ${url}\n` +
    `  files up to ${mib(config.threshold)} stay in memory, larger ones roll over to ${rollover}\n` +
    `  memory budget ${mib(config.memoryBudget)}, max file ${mib(config.maxFileSize)}, ${config.maxFiles} files per request`
  );
}

async function main(): Promise<void> {
  let config: DemoConfig;
  try {
    config = loadConfig();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`${err.message}\nSee the "Demo server" section of README.md.`);
    process.exit(1);
  }
  const running = await startDemoServer(config).catch((err: unknown) => {
    console.error(`Could not start the demo: ${err instanceof Error ? err.message : err}`);
    process.exit(1);
  });
  console.log(describe(config, running.url, running.s3Endpoint));

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) {
      console.error(`[shutdown] ${signal} again: exiting now`);
      process.exit(1);
    }
    stopping = true;
    console.log(`[shutdown] ${signal}: no new uploads, waiting up to ${config.shutdownTimeout} ms for running ones`);
    running.shutdown().then(
      () => {
        console.log('[shutdown] stored files removed, bye');
        process.exit(0);
      },
      (err: unknown) => {
        console.error(`[shutdown] failed: ${err instanceof Error ? err.message : err}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
}

if (require.main === module) void main();
