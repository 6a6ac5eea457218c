/**
 * Starling's TypeScript SDK: a WebSocket client for end users' apps (browsers and Node).
 *
 * ```ts
 * import { StarlingClient } from "@starling-chat/sdk";
 * const client = new StarlingClient({ url: "http://127.0.0.1:7400", token: () => fetchToken() });
 * client.on("message.new", ({ message }) => console.log(message.seq, message.text));
 * await client.connect();
 * await client.send(conversationId, "Hello!");
 * ```
 */
export {
  StarlingClient,
  StarlingError,
  connectUrl,
  type ClientOptions,
  type BackoffOptions,
  type ClientEvents,
  type ClientEventName,
  type ClientEventOf,
  type ConnectionState,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./client.js";
export type * from "./types.js";
