// The browser client (being written): speaks the chat protocol over the
// WebSocket at /ws, one frame per text message.
"use strict";
