// Types of client.js, the meetingtasks gateway client.

export declare const CLOSE: Readonly<{
  UNAUTHENTICATED: 4401;
  FORBIDDEN: 4403;
  AUTH_TIMEOUT: 4408;
  TOO_SLOW: 4429;
  TRY_AGAIN: 1013;
}>;

export type FinalStatus = "completed" | "failed" | "timeout" | "cancelled";
export type TaskStatus = "submitting" | "queued" | "scheduled" | "processing" | "retrying" | FinalStatus;
export declare const FINAL_STATUSES: readonly FinalStatus[];

/** A protocol error: `code` is the error code (`rate_limited`, `token_expired` …). */
export declare class MeetingTasksError extends Error {
  code: string;
  /** The request it answers, when it answers one. */
  requestId?: string;
  /** The WebSocket close code, for a refused connection (4401, 4403). */
  closeCode?: number;
  taskId?: string;
}

export interface ServerFrame {
  op: string;
  request_id?: string;
  [field: string]: unknown;
}

export interface SessionFrame extends ServerFrame {
  op: "session";
  session_id: string;
  user_id: string;
  resumed: boolean;
  tasks: { task_id: string; status: TaskStatus; request_id?: string }[];
  limits: Record<string, unknown>;
  /** Unix time the token expires: the gateway asks for a new one before (token_expiring). */
  expires_at: number;
}

export interface StatusFrame extends ServerFrame {
  task_id: string;
  status: TaskStatus;
  result?: unknown;
  error?: string;
}

/** An EventBus event: type, source, payload, id, time, meeting_id, user_id, trace_id. */
export interface MeetingEvent {
  type: string;
  source: string;
  payload: Record<string, unknown>;
  id: string;
  time: string;
  meeting_id?: string;
  user_id?: string;
  trace_id?: string;
}

export declare class Task<Result = unknown> {
  readonly type: string;
  readonly requestId: string;
  /** Set once the gateway accepted it. */
  id: string | null;
  status: TaskStatus;
  progress: ServerFrame | null;
  readonly done: boolean;
  /** Resolves with the result; rejects with a MeetingTasksError whose code is the status. */
  readonly result: Promise<Result>;
  /** The streamed deltas as they arrive; ends with the result. */
  deltas(): AsyncIterableIterator<string>;
  onUpdate(listener: (task: Task<Result>, frame: ServerFrame) => void): () => void;
  cancel(): Promise<TaskStatus>;
}

export interface ClientOptions {
  token?: string;
  /** Called when the token expired; returns a new one. */
  getToken?: () => string | Promise<string>;
  /** A session id to resume. */
  session?: string;
  /** The WebSocket class (default: the global one). */
  WebSocket?: typeof WebSocket;
  /** Reconnect backoff bounds, ms (default 250 and 10000). */
  minDelay?: number;
  maxDelay?: number;
  /** Keepalive: a ping every pingInterval ms, the connection dropped without a pong in pongTimeout ms. */
  pingInterval?: number;
  pongTimeout?: number;
  /** How long a request waits for its answer, ms (default 30000). */
  requestTimeout?: number;
}

export interface SubmitOptions {
  priority?: "high" | "normal" | "low";
  timeout?: number;
  /** Seconds before it may run. */
  delay?: number;
  meetingId?: string;
}

/** A meeting as it stands: who is in it and its live streams (stream id -> description). */
export interface MeetingState {
  participants: string[];
  streams: Record<string, { user_id: string; kind: string }>;
}

export interface Subscription {
  channel: string;
  /** The meeting's state when the gateway confirmed the subscription. */
  meeting: MeetingState | null;
  unsubscribe(): Promise<void>;
}

export type ClientState = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export declare class MeetingTasksClient {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  token: string | null;
  state: ClientState;
  sessionId: string | null;
  session: SessionFrame | null;
  limits: Record<string, unknown>;
  readonly tasks: Map<string, Task>;
  on(name: "state", listener: (state: ClientState) => void): () => void;
  on(name: "session", listener: (frame: SessionFrame) => void): () => void;
  on(name: "error", listener: (error: MeetingTasksError) => void): () => void;
  on(name: "frame", listener: (frame: ServerFrame) => void): () => void;
  on(name: "task", listener: (task: Task) => void): () => void;
  /** The gateway asks for a new token before ``expires_at`` (getToken is called if given). */
  on(name: "token_expiring", listener: (frame: { op: "token_expiring"; expires_at: number }) => void): () => void;
  /** A refresh took: the connection lasts until ``expires_at``. */
  on(name: "authenticated", listener: (frame: { op: "authenticated"; expires_at: number }) => void): () => void;
  /** Unix time the connection's token expires, from the session frame on (updated by token_expiring, authenticated). */
  tokenExpiresAt?: number;
  connect(): Promise<SessionFrame>;
  close(): void;
  submit<Result = unknown>(type: string, data?: Record<string, unknown>, options?: SubmitOptions): Promise<Task<Result>>;
  status(taskId: string): Promise<StatusFrame>;
  cancel(taskId: string): Promise<TaskStatus>;
  subscribe(
    channel: string,
    onEvent: (event: MeetingEvent, frame: ServerFrame) => void,
    options?: { onState?: (meeting: MeetingState) => void },
  ): Promise<Subscription>;
  /** Sends a new token on an open connection; resolves with the gateway's ``authenticated``
   * answer (null when not connected: the token is used at the next connection). */
  refreshToken(token: string): Promise<ServerFrame | null>;
  ping(): Promise<ServerFrame>;
}
