/**
 * The protocol's types: generated ones (from the JSON Schemas in `sdk-specs/asyncapi/schemas/`,
 * see `scripts/gen-types.mjs`) and the `result` of each `ack`, which the schemas leave open and
 * the AsyncAPI document describes in prose. Golden frames in `sdk-specs/asyncapi/examples/`
 * are type-checked against all of these by `test/unit/golden.test.ts`.
 */
import type { ClientFrame } from "./generated/client-frame.js";
import type { Event, MemberOut, MessageOut, ConversationOut } from "./generated/event.js";
import type { AckFrame, ErrorFrame, HelloFrame, ResyncFrame, ServerFrame } from "./generated/server-frame.js";

export type * from "./generated/client-frame.js";
export type * from "./generated/server-frame.js";
export type {
  Event,
  MessageOut,
  MemberOut,
  ConversationOut,
  MessageNewEvent,
  MessageUpdatedEvent,
  MessageDeletedEvent,
  ReactionAddedEvent,
  ReactionRemovedEvent,
  ReadEvent,
  TypingEvent,
  PresenceEvent,
  MemberAddedEvent,
  MemberUpdatedEvent,
  MemberRemovedEvent,
  ConversationUpdatedEvent,
  ConversationDeletedEvent,
} from "./generated/event.js";

/** Every event type, e.g. `"message.new"`. */
export type EventType = Event["type"];
/** The event of one type. */
export type EventOf<T extends EventType> = Extract<Event, { type: T }>;
/** The request types a client sends. */
export type RequestType = ClientFrame["type"];
/** A request frame without its `type` and `id` (the SDK fills them in). */
export type RequestBody<T extends RequestType> = Omit<Extract<ClientFrame, { type: T }>, "type" | "id">;

/** `ack.result` of each request. */
export interface AckResults {
  send: { message: MessageOut; duplicate: boolean };
  edit: { message: MessageOut };
  delete: { message: MessageOut };
  react: { reactions: Record<string, number> };
  read: { last_read_seq: number };
  typing: Record<string, never>;
  subscribe: { member: MemberOut };
  unsubscribe: Record<string, never>;
  sync: { messages: MessageOut[]; has_more: boolean };
  ping: { pong: boolean };
}

/** An `ack` whose `result` is typed for request `T`. */
export interface TypedAck<T extends RequestType> extends Omit<AckFrame, "result"> {
  result: AckResults[T];
}

export type { AckFrame, ErrorFrame, HelloFrame, ResyncFrame, ServerFrame, ClientFrame };

/** Anything the server sends: its own frames and events. */
export type Incoming = ServerFrame | Event;

/** One of a user's conversations, as the server API lists them (`/v1/users/{id}/conversations`). */
export interface UserConversation {
  conversation: ConversationOut;
  membership: MemberOut;
  unread_count: number;
  last_message: MessageOut | null;
}
