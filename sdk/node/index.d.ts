// Types of the noslate SDK: Noslate's NoslatedClient over noslate's admin socket.

import { EventEmitter } from 'events';
import { Readable } from 'stream';

/** Header-like pairs, in order, duplicates allowed. An object (Node's `req.headers`), a Map or a fetch `Headers` is accepted too. */
export type Pairs = Array<[string, string]>;

/** What `headers` and `baggage` accept. */
export type PairsLike = Pairs | Iterable<[string, string]> | Record<string, string | string[] | number | undefined>;

export interface Metadata {
  /** The method the function sees. With `url`, makes the invocation an HTTP request; without both, an event. */
  method?: string;
  /** The url (path and query) the function sees. */
  url?: string;
  headers?: PairsLike;
  baggage?: PairsLike;
  /** Milliseconds until the response head is due (not the whole stream). Default: the function's timeout. */
  timeout?: number;
  /** The head's deadline, in milliseconds since the Unix epoch. */
  deadline?: number;
  /** The id the function and the logs see. Default: the `x-fc-request-id` among `headers`, else a fresh one. */
  requestId?: string;
  /** Accepted for compatibility; noslate has no debugger tags. */
  debuggerTag?: string;
}

/** The response: a Readable of the body, available at the head. Destroying it cancels the invocation. */
export interface TriggerResponse extends Readable {
  status: number;
  metadata: { headers: Pairs };
}

export interface ClientOptions {
  /** The admin socket. Default: `$NOSLATE_WORKDIR/noslated.sock` (`$TMPDIR/noslate/noslated.sock`). */
  socketPath?: string;
  logger?: { info(...args: unknown[]): void; warn(...args: unknown[]): void; error(...args: unknown[]): void };
  /** How long `start()` waits for the runtime, in ms. Default 10 000. */
  startTimeout?: number;
  /** How often the client checks for a restarted runtime, in ms. Default 1 000. */
  watchInterval?: number;
  /** Invocations under way at once, each on its own connection; more wait for one. Default 1 024. */
  maxConnections?: number;
  /** How long the event loop keeps polling instead of sleeping after an invocation is sent, in µs (0 to 1 000). Default 500; 0 turns it off. */
  busyPollMicros?: number;
  /** The most invocations waiting for their response heads at which the loop polls. Default 2. */
  busyPollMaxWaiting?: number;
}

export interface PlatformEnvironmentVariable {
  key: string;
  value: string | null | undefined;
}

export interface HealthResult {
  health: boolean;
  name: 'ControlPlane' | 'DataPlane';
  reason?: string;
}

export interface WorkerStats {
  name: string;
  credential: string;
  pid: number;
  status: string;
  registerTime: number | null;
  activeRequestCount: number;
}

export interface BrokerStats {
  name: string;
  inspector: boolean;
  profile: object | null;
  redundantTimes: number;
  startingPool: unknown[];
  activeWorkerCount: number;
  initiatingWorkerCount: number;
  workers: WorkerStats[];
}

export class NoslatedClient extends EventEmitter {
  constructor(options?: ClientOptions);
  start(): Promise<void>;
  close(): Promise<void>;
  invoke(name: string, data?: Buffer | Uint8Array | string | Readable | null, metadata?: Metadata): Promise<TriggerResponse>;
  invokeService(name: string, data?: Buffer | Uint8Array | string | Readable | null, metadata?: Metadata): Promise<TriggerResponse>;
  setFunctionProfile(profiles: object[], mode?: 'IMMEDIATELY' | 'WAIT'): Promise<object | undefined>;
  getFunctionProfile(): object[] | null;
  setServiceProfile(items: object[]): Promise<object | undefined>;
  getServiceProfile(): object[];
  setPlatformEnvironmentVariables(envs: PlatformEnvironmentVariable[]): Promise<object | undefined>;
  getPlatformEnvironmentVariables(): Array<{ key: string; value: string }>;
  useInspector(name: string, use: boolean): Promise<object | undefined>;
  checkControlPlaneHealth(timeout?: number): Promise<HealthResult>;
  checkDataPlaneHealth(timeout?: number): Promise<HealthResult>;
  getWorkerStatsSnapshot(): Promise<{ brokers: BrokerStats[] }>;
  on(event: 'newDataPlaneClientReady' | 'newControlPlaneClientReady', listener: (info: { instance: string }) => void): this;
}

export declare const CanonicalCode: {
  readonly OK: 0;
  readonly INTERNAL_ERROR: 1;
  readonly TIMEOUT: 2;
  readonly NOT_IMPLEMENTED: 3;
  readonly CONNECTION_RESET: 4;
  readonly CLIENT_ERROR: 5;
  readonly CANCELLED: 6;
};

/** A failure of the function's worker: its own error, a timeout, a crash. */
export class NoslatedError extends Error {
  code: number;
  errorType?: string;
  operation?: string;
  peerMessage?: string;
  peerStack?: string;
  status?: number;
}
