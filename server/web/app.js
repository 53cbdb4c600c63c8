// The browser client: the chat protocol over the WebSocket at /ws, one
// frame per text message, for a person at a browser.
//
// Sections, in order: the rules it shares with the server and chat-client
// (names, colors, times), reading server frames, words for errors, the state
// of the conversations, drawing them, the connection (login, reconnect,
// keepalive), handling each frame, the typed commands, the input line
// (history and completion), and wiring it all to the page.
//
// Everything a user or the server sends is shown with textContent or text
// nodes, never as markup: nothing anyone sends is run or rendered.
"use strict";

(() => {

// ---------------------------------------------------------------------------
// Shared rules: names, rooms, colors, times, sizes.

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const ROOM_RE = /^#[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const NAME_RULES = "a name is 1 to 32 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit";
const ROOM_RULES = "a room is '#' then 1 to 32 ASCII letters, digits, '_', '-' or '.', starting with a letter or digit";
const PASSWORD_RULES = "a password is one word of 8 to 128 bytes, without spaces or control characters";
const MAX_LINE = 4096;           // bytes in a frame, without the line ending
const KEEP_LINES = 1000;         // lines kept per conversation
const AUTO_HISTORY = 50;         // messages fetched when a conversation opens
const KEEPALIVE_MS = 60000;      // a PING after this long without sending, as chat-client
const PONG_WAIT_MS = 20000;      // a keepalive unanswered this long: the link is dead
const BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];

// Names and rooms compare case-insensitively, as ASCII (protocol::name_key).
const key = (name) => name.replace(/[A-Z]/g, (c) => c.toLowerCase());

// chat-client's name colors: FNV-1a over the folded name, into these
// 256-color palette indices; style.css paints class c<index> in its RGB.
const PALETTE = [136, 70, 36, 39, 69, 165, 205];
function colorIndex(name) {
  let hash = 0x811c9dc5;
  for (const byte of new TextEncoder().encode(key(name))) {
    hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  }
  return PALETTE[hash % PALETTE.length];
}

const bytes = (text) => new TextEncoder().encode(text).length;
const isBlank = (text) => /^ *$/.test(text);

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dated = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
});
// A time in the reader's zone: hours and minutes today, with the date another day.
function localTime(date) {
  const today = new Date().toDateString() === date.toDateString();
  return (today ? clock : dated).format(date);
}

// ---------------------------------------------------------------------------
// Reading server frames. A text is everything after its tokens and one space,
// kept exactly, so a frame is cut a token at a time.

function cut(rest) {
  const space = rest.indexOf(" ");
  return space < 0 ? [rest, ""] : [rest.slice(0, space), rest.slice(space + 1)];
}

function parseFrame(line) {
  const [verb, rest] = cut(line);
  const frame = { verb, rest };
  const roomFirst = rest.startsWith("#");
  let a, b, c;
  switch (verb) {
    case "WELCOME": case "REGISTERED": case "UNREGISTERED":
      frame.name = rest; break;
    case "NAMES":
      if (roomFirst) [frame.room, a] = cut(rest); else a = rest;
      frame.names = a.split(" ").filter(Boolean);
      break;
    case "JOIN":
      if (roomFirst) [frame.room, frame.name] = cut(rest); else frame.name = rest;
      break;
    case "LEAVE":
      if (roomFirst) [frame.room, a] = cut(rest); else a = rest;
      [frame.name, frame.text] = cut(a);
      break;
    case "MSG": [frame.from, frame.text] = cut(rest); break;
    case "SAY": [frame.room, a] = cut(rest); [frame.from, frame.text] = cut(a); break;
    case "TELL": [frame.from, a] = cut(rest); [frame.to, frame.text] = cut(a); break;
    case "TOPIC": [frame.room, a] = cut(rest); [frame.setter, frame.text] = cut(a); break;
    case "HISTORY":
      if (roomFirst) [frame.room, a] = cut(rest); else a = rest;
      frame.count = Number(a);
      break;
    case "HIST":
      if (roomFirst) [frame.room, a] = cut(rest); else a = rest;
      [b, c] = cut(a);
      frame.time = new Date(b);
      [frame.from, frame.text] = cut(c);
      break;
    case "ERROR": [frame.code, frame.detail] = cut(rest); break;
    case "OK": [frame.what, frame.name] = cut(rest); break;
    case "ROOMS": case "BANS": frame.pairs = pairs(rest); break;
    case "DROPPED": frame.count = Number(rest); break;
    default: break;
  }
  return frame;
}

function pairs(rest) {
  const words = rest.split(" ").filter(Boolean);
  const out = [];
  for (let i = 0; i + 1 < words.length; i += 2) out.push([words[i], words[i + 1]]);
  return out;
}

// ---------------------------------------------------------------------------
// Errors in plain words. The server's code and detail are shown beside them.

const ERROR_WORDS = {
  "bad-name": NAME_RULES,
  "name-taken": "that name is taken right now",
  "not-logged-in": "log in first",
  "already-logged-in": "you are logged in already",
  "unknown-command": "the server does not know that request",
  "empty-message": "there is nothing to send",
  "bad-text": "control characters cannot be sent",
  "line-too-long": `that is too long: a line holds at most ${MAX_LINE} bytes`,
  "invalid-utf8": "the server could not read that text",
  "bad-room": ROOM_RULES,
  "not-in-room": "you are not in that room",
  "already-in-room": "you are in that room already",
  "no-such-user": "nobody is logged in under that name (/who lists who is here)",
  "bad-count": "a count is a number from 1",
  "too-many-rooms": "no more rooms for now: leave one first, or try later",
  "name-registered": "that name is registered: it logs in with its password",
  "bad-password": "wrong password",
  "weak-password": PASSWORD_RULES,
  "not-registered": "that name is not registered",
  "already-registered": "that name is registered already (/password changes its password)",
  "too-many-tries": "too many wrong passwords for this name in the last minute: wait a minute, then try again",
  "not-operator": "only operators may do that, and not to themselves or another operator",
  "bad-duration": "a duration is a number and a unit, s, m, h or d (90s, 10m, 7d), from 1 second to 365 days",
  "unavailable": "the server is unavailable right now",
  "login-timeout": "the login took too long",
  "idle-timeout": "the connection was idle too long",
  "server-full": "the server is full",
  "shutting-down": "the server is shutting down",
  "too-many-connections": "too many connections from this address",
};

// An <until> (RFC 3339) in local time, or as sent when it is not a time.
function until(text) {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? text : localTime(date);
}

// What an ERROR about the user (rather than a request) means, if it is one.
function aboutYou(code, detail) {
  const [first, rest] = cut(detail || "");
  const why = rest.trim() ? `: ${rest.trim()}` : "";
  switch (code) {
    case "kicked": return first ? `you were kicked by ${first}${why}` : "you were kicked by an operator";
    case "banned": return first ? `you are banned until ${until(first)}${why}` : "you are banned";
    case "muted": return first ? `you are muted until ${until(first)}; your message was not sent` : "you are muted";
    case "logged-in-elsewhere": return "you logged in somewhere else; this page's session is closed";
    default: return null;
  }
}

function errorWords(code, detail) {
  return aboutYou(code, detail) || ERROR_WORDS[code] || "the server refused that";
}

// Why a login was refused, beside the name field.
function loginRefusal(name, code, detail) {
  switch (code) {
    case "name-taken": return `The name ${name} is taken right now. Choose another.`;
    case "bad-name": case "bad-text": return `“${name}” cannot be a name: ${NAME_RULES}.`;
    case "name-registered": return `${name} is a registered name: enter its password.`;
    case "bad-password": return `Wrong password for ${name}.`;
    case "not-registered": return `${name} is not registered: leave the password empty.`;
    default: {
      const words = errorWords(code, detail);
      return words.charAt(0).toUpperCase() + words.slice(1) + ".";
    }
  }
}

// ERRORs after which the server closes; of those, the ones not worth a retry.
const CLOSING = new Set(["login-timeout", "idle-timeout", "server-full", "shutting-down",
  "too-many-connections", "logged-in-elsewhere", "kicked", "banned"]);
const FINAL = new Set(["logged-in-elsewhere", "kicked", "banned"]);
// Login refusals that no retry will cure.
const LOGIN_FINAL = new Set(["bad-name", "bad-text", "name-registered", "bad-password",
  "not-registered", "banned", "too-many-tries"]);

// ---------------------------------------------------------------------------
// State: who we are, and the conversations (the lobby, rooms, direct messages).

const LOBBY = "lobby";
const state = {
  me: null,               // the name as the server spells it, once logged in
  name: "",               // as typed at login
  password: "",           // kept in memory only, to log in again after a drop
  pendingPassword: null,  // the new password of a /register or /password
  conversations: new Map(),
  current: LOBBY,
  knownRooms: new Map(),  // key -> spelling, from ROOMS answers and joins
  pendingJoins: new Set(),
  whoAsked: new Set(),    // places whose next NAMES answers a /who
  historyAsked: new Map(),// conversation key -> FIFO of { auto } for HISTORY replies
  reply: null,            // the HISTORY reply being read: { conv, auto, left, items }
};

function conversation(k) { return state.conversations.get(k); }
const isMe = (name) => state.me !== null && key(name) === key(state.me);

function makeConversation(k, kind, title) {
  let conv = conversation(k);
  if (conv) return conv;
  const log = document.createElement("ol");
  log.className = "log";
  log.setAttribute("role", "log");
  log.setAttribute("aria-live", "polite");
  log.setAttribute("aria-label", `Messages in ${kind === "lobby" ? "the lobby" : title}`);
  conv = {
    key: k, kind, title, log,
    members: new Map(),  // key -> spelling
    topic: null,         // { setter, text }
    joined: kind !== "room",
    unread: 0,
    messages: [],        // { from, text, el }: what history is matched against
    since: null,         // messages received while an automatic HISTORY is out
  };
  state.conversations.set(k, conv);
  renderConversations();
  return conv;
}

const lobby = () => makeConversation(LOBBY, "lobby", "Lobby");
const room = (name) => makeConversation(key(name), "room", name);
function dm(name) {
  const conv = makeConversation("@" + key(name), "dm", name);
  conv.members.set(key(name), name);
  if (state.me) conv.members.set(key(state.me), state.me);
  return conv;
}

// ---------------------------------------------------------------------------
// Drawing: the lines of a conversation, the list of conversations, the pane.

const $ = (id) => document.getElementById(id);

function nameNode(name) {
  const span = document.createElement("span");
  span.className = `name c${colorIndex(name)}`;
  span.textContent = name;
  return span;
}

// A line of `kind` (msg, event, error, divider) from strings and nodes.
function lineNode(kind, parts, time = new Date()) {
  if (Number.isNaN(time.getTime())) time = new Date();
  const li = document.createElement("li");
  li.className = `line ${kind}`;
  const stamp = document.createElement("time");
  stamp.dateTime = time.toISOString();
  stamp.textContent = localTime(time);
  li.append(stamp, " ");
  for (const part of parts) li.append(part);
  return li;
}

function textNode(text, className = "text") {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  return span;
}

// Appends `li` to a conversation, keeping the view at the bottom if it was.
function append(conv, li, before = null) {
  const holder = $("log-holder");
  const shown = conv.key === state.current;
  const atBottom = holder.scrollHeight - holder.scrollTop - holder.clientHeight < 40;
  conv.log.insertBefore(li, before);
  while (conv.log.childElementCount > KEEP_LINES) conv.log.firstElementChild.remove();
  if (conv.messages.length > KEEP_LINES) conv.messages.splice(0, conv.messages.length - KEEP_LINES);
  if (shown && (atBottom || !before)) holder.scrollTop = holder.scrollHeight;
}

function event(conv, parts, time) {
  append(conv, lineNode("event", parts, time));
}

// A message; `hist` for one from history (its own time, drawn quieter).
function messageNode(from, text, { time, hist = false, dm = null } = {}) {
  const own = isMe(from);
  const parts = [nameNode(from)];
  if (dm) parts.push(textNode(" → ", "arrow"), isMe(dm) ? textNode("you", "you") : nameNode(dm));
  parts.push(textNode(": ", "colon"), textNode(text));
  const li = lineNode(`msg${own ? " own" : ""}${hist ? " hist" : ""}`, parts, time);
  if (own) li.prepend(textNode("You said", "visually-hidden"));
  return li;
}

function message(conv, from, text, options = {}) {
  const li = messageNode(from, text, options);
  append(conv, li);
  const record = { from, text, el: li };
  conv.messages.push(record);
  if (conv.since) conv.since.push(record);
  if (conv.key !== state.current && !isMe(from)) {
    conv.unread += 1;
    renderConversations();
  }
}

function notice(text, conv = conversation(state.current)) {
  event(conv, [textNode(text)]);
}

function problem(text, code, detail) {
  const parts = [textNode(text)];
  const repeats = detail && text.toLowerCase().includes(detail.toLowerCase());
  if (code) parts.push(textNode(` [${code}${detail && !repeats ? ": " + detail : ""}]`, "code"));
  append(conversation(state.current), lineNode("error", parts));
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  const groups = [["lobby", null], ["room", "Rooms"], ["dm", "Direct messages"]];
  for (const [kind, label] of groups) {
    const convs = [...state.conversations.values()].filter((c) => c.kind === kind)
      .sort((a, b) => (a.key < b.key ? -1 : 1));
    if (label && convs.length) {
      const li = document.createElement("li");
      li.className = "group";
      li.textContent = label;
      list.append(li);
    }
    for (const conv of convs) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "conv" + (conv.joined ? "" : " gone");
      button.dataset.key = conv.key;
      if (conv.key === state.current) button.setAttribute("aria-current", "true");
      const title = conv.kind === "dm" ? nameNode(conv.title) : textNode(conv.title, "title");
      button.append(title);
      if (conv.unread > 0) {
        const badge = textNode(String(conv.unread), "badge");
        badge.append(textNode(" unread", "visually-hidden"));
        button.append(badge);
      }
      li.append(button);
      list.append(li);
    }
  }
}

function renderPane() {
  const conv = conversation(state.current);
  $("conv-title").textContent = conv.kind === "lobby" ? "Lobby" : conv.title;
  const topic = $("conv-topic");
  topic.replaceChildren();
  if (conv.kind === "lobby") topic.textContent = "Everyone who is logged in";
  else if (conv.kind === "dm") topic.textContent = `Direct messages with ${conv.title}`;
  else if (!conv.joined) topic.textContent = "You are not in this room";
  else if (conv.topic) {
    topic.append(textNode(conv.topic.text), textNode(" — set by ", "muted"), nameNode(conv.topic.setter));
  } else topic.textContent = "No topic set (/topic sets one)";
  const leave = $("leave-conv");
  leave.hidden = conv.kind === "lobby";
  leave.textContent = conv.kind === "room" && conv.joined ? "Leave room" : "Close";
  renderMembers();
  const holder = $("log-holder");
  if (holder.firstChild !== conv.log) holder.replaceChildren(conv.log);
  holder.scrollTop = holder.scrollHeight;
  $("input").placeholder = conv.kind === "lobby" ? "Message the lobby"
    : conv.kind === "dm" ? `Message ${conv.title}` : `Message ${conv.title}`;
}

function renderMembers() {
  const conv = conversation(state.current);
  const list = $("member-list");
  list.replaceChildren();
  const names = [...conv.members.values()].sort((a, b) => (key(a) < key(b) ? -1 : 1));
  for (const name of names) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "member";
    button.dataset.name = name;
    button.append(nameNode(name));
    if (isMe(name)) button.append(textNode(" (you)", "muted"));
    else button.title = `Message ${name}`;
    li.append(button);
    list.append(li);
  }
  $("members-title").textContent = `Members (${names.length})`;
  $("members-toggle").textContent = `Members (${names.length})`;
}

function show(k) {
  if (!conversation(k)) return;
  state.current = k;
  conversation(k).unread = 0;
  renderConversations();
  renderPane();
}

// ---------------------------------------------------------------------------
// The connection: one WebSocket at a time; after a drop, log in again with
// backoff, rejoin the rooms and fetch what was missed.

const link = {
  ws: null,
  loggedIn: false,   // WELCOME came on this socket
  everIn: false,     // some socket of this session logged in
  attempt: 0,
  timer: null,
  countdown: null,
  closing: null,     // the ERROR that announced the close, if any
  quitting: false,   // the person logged out
  lastSent: 0,
  pingSince: 0,
};

function send(frame) {
  if (!link.ws || link.ws.readyState !== WebSocket.OPEN) {
    problem("not sent: the connection is down; it is being restored");
    return false;
  }
  link.ws.send(frame);
  link.lastSent = Date.now();
  return true;
}

function connect() {
  clearTimeout(link.timer);
  clearInterval(link.countdown);
  $("retry-now").hidden = true;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws`);
  link.ws = ws;
  link.loggedIn = false;
  link.closing = null;
  ws.onopen = () => {
    const frame = state.password ? `NAME ${state.name} ${state.password}` : `NAME ${state.name}`;
    send(frame);
  };
  ws.onmessage = (e) => { if (ws === link.ws && typeof e.data === "string") receive(e.data); };
  ws.onclose = () => { if (ws === link.ws) dropped(); };
}

function dropped() {
  const wasIn = link.loggedIn;
  link.ws = null;
  link.loggedIn = false;
  link.pingSince = 0;
  if (link.quitting) return;
  const code = link.closing && link.closing.code;
  if (!link.everIn) {
    // The first login never got through: say so beside the field.
    loginFailed(code ? loginRefusal(state.name, code, link.closing.detail)
      : "Could not reach the chat server. Check that it is running, then try again.");
    return;
  }
  if (code && FINAL.has(code)) {
    backToLogin(capitalise(errorWords(code, link.closing.detail)) + ".");
    return;
  }
  if (wasIn) {
    for (const conv of state.conversations.values()) {
      if (conv.joined) event(conv, [textNode("connection lost")]);
    }
  }
  const delay = BACKOFF_MS[Math.min(link.attempt, BACKOFF_MS.length - 1)];
  link.attempt += 1;
  const reason = code === "shutting-down" ? "The server is restarting."
    : code ? capitalise(errorWords(code, link.closing.detail)) + "." : "Connection lost.";
  const due = Date.now() + delay;
  const tick = () => {
    const left = Math.max(1, Math.ceil((due - Date.now()) / 1000));
    setStatus(`${reason} Reconnecting in ${left} s…`, "down");
  };
  tick();
  link.countdown = setInterval(tick, 1000);
  link.timer = setTimeout(() => {
    clearInterval(link.countdown);
    setStatus(`${reason} Reconnecting…`, "down");
    connect();
  }, delay);
  $("retry-now").hidden = false;
}

function capitalise(text) { return text.charAt(0).toUpperCase() + text.slice(1); }

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind || ""}`;
}

// Keepalive: the server drops a user who sends nothing for its idle timeout,
// and a PING unanswered for long means the link is dead.
setInterval(() => {
  if (!link.loggedIn) return;
  if (link.pingSince && Date.now() - link.pingSince > PONG_WAIT_MS) {
    link.ws.close();
    return;
  }
  if (!link.pingSince && Date.now() - link.lastSent > KEEPALIVE_MS) {
    if (send("PING keepalive")) link.pingSince = Date.now();
  }
}, 5000);

// After a WELCOME: the lobby's history, and the rooms again after a drop.
function loggedIn(name) {
  const first = !link.everIn;
  state.me = name;
  link.loggedIn = true;
  link.everIn = true;
  link.attempt = 0;
  $("me").replaceChildren(textNode("Logged in as ", "muted"), nameNode(name));
  for (const conv of state.conversations.values()) {
    if (conv.kind === "dm") conv.members.set(key(name), name);
  }
  askHistory(lobby(), true);
  if (first) {
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    setStatus("Connected.", "up");
    try { localStorage.setItem("chat-name", state.name); } catch (_) { /* private mode */ }
    show(LOBBY);
    $("input").focus();
    return;
  }
  setStatus("Reconnected.", "up");
  for (const conv of state.conversations.values()) {
    if (conv.kind === "lobby" || conv.kind === "dm") event(conv, [textNode("reconnected")]);
    if (conv.kind === "room" && conv.joined) {
      conv.joined = false;
      state.pendingJoins.add(conv.key);
      send(`JOIN ${conv.title}`);
    }
  }
}

function askHistory(conv, auto, count = AUTO_HISTORY) {
  const target = conv.kind === "room" ? `${conv.title} ` : "";
  if (!send(`HISTORY ${target}${count}`)) return;
  if (!state.historyAsked.has(conv.key)) state.historyAsked.set(conv.key, []);
  state.historyAsked.get(conv.key).push({ auto });
  if (auto) conv.since = [];
}

// ---------------------------------------------------------------------------
// Handling what the server sends.

function receive(line) {
  const f = parseFrame(line);
  if (state.reply && f.verb !== "HIST") finishHistory();
  switch (f.verb) {
    case "WELCOME": return loggedIn(f.name);
    case "NAMES": return onNames(f);
    case "JOIN": return onJoin(f);
    case "LEAVE": return onLeave(f);
    case "MSG": return message(lobby(), f.from, f.text);
    case "SAY": return message(room(f.room), f.from, f.text);
    case "TELL": {
      const other = isMe(f.from) ? f.to : f.from;
      return message(dm(other), f.from, f.text, { dm: f.to });
    }
    case "TOPIC": return onTopic(f);
    case "HISTORY": return onHistory(f);
    case "HIST": return onHist(f);
    case "ROOMS": return onRooms(f);
    case "ERROR": return onError(f);
    case "PONG": link.pingSince = 0; return undefined;
    case "BYE": link.quitting = true; return undefined;
    case "DROPPED":
      return notice(`${f.count} message${f.count === 1 ? " was" : "s were"} skipped because this page fell behind`);
    case "REGISTERED":
      if (state.pendingPassword !== null) state.password = state.pendingPassword;
      state.pendingPassword = null;
      return notice(`the name ${f.name} is registered to you: from now on it logs in only with your password`);
    case "UNREGISTERED":
      state.password = "";
      state.pendingPassword = null;
      return notice(`the name ${f.name} is no longer registered: anyone may log in with it`);
    case "OK": {
      const done = { KICK: "was kicked", BAN: "is banned", UNBAN: "is no longer banned",
        MUTE: "is muted", UNMUTE: "is no longer muted" }[f.what] || `: done (${f.what})`;
      return event(conversation(state.current), [nameNode(f.name), textNode(` ${done}`)]);
    }
    case "BANS":
      return notice(f.pairs.length ? "banned: " + f.pairs.map(([n, t]) => `${n} until ${until(t)}`).join(", ")
        : "nobody is banned");
    default:
      return notice(`the server sent something this page does not know: ${line}`);
  }
}

function onNames(f) {
  if (!f.room) {
    const conv = lobby();
    conv.members = new Map(f.names.map((n) => [key(n), n]));
    if (state.whoAsked.delete(LOBBY)) notice(`in the lobby: ${f.names.join(", ")}`);
    if (state.current === LOBBY) renderMembers();
    return;
  }
  const k = key(f.room);
  const mine = f.names.some(isMe);
  const existing = conversation(k);
  if (mine && (!existing || !existing.joined)) {
    // The answer to our JOIN (or a rejoin after a drop).
    const conv = room(f.room);
    const wanted = state.pendingJoins.delete(k);
    conv.joined = true;
    conv.title = f.room;
    conv.topic = null;
    conv.members = new Map(f.names.map((n) => [key(n), n]));
    state.knownRooms.set(k, f.room);
    event(conv, [textNode(existing ? "you are back in " : "you joined "), textNode(f.room, "room")]);
    askHistory(conv, true);
    if (wanted && !existing) show(k);
    else { renderConversations(); if (state.current === k) renderPane(); }
  } else if (existing && existing.joined) {
    existing.members = new Map(f.names.map((n) => [key(n), n]));
    if (state.current === k) renderMembers();
  }
  if (state.whoAsked.delete(k)) {
    notice(f.names.length ? `in ${f.room}: ${f.names.join(", ")}` : `nobody is in ${f.room}`);
  }
}

function onJoin(f) {
  const conv = f.room ? room(f.room) : lobby();
  conv.members.set(key(f.name), f.name);
  event(conv, [nameNode(f.name), textNode(f.room ? " joined the room" : " joined the chat")]);
  if (state.current === conv.key) renderMembers();
}

function onLeave(f) {
  const said = f.text ? [textNode(` (${f.text})`, "text")] : [];
  if (f.room) {
    const conv = room(f.room);
    conv.members.delete(key(f.name));
    if (isMe(f.name)) {
      conv.joined = false;
      event(conv, [textNode("you left "), textNode(conv.title, "room"), ...said]);
      if (state.current === conv.key) show(LOBBY); else renderConversations();
      return;
    }
    event(conv, [nameNode(f.name), textNode(" left the room"), ...said]);
    if (state.current === conv.key) renderMembers();
    return;
  }
  // Gone from the server: from every room too, without a room's LEAVE.
  for (const conv of state.conversations.values()) {
    const k = key(f.name);
    if (conv.kind === "lobby" || (conv.members.has(k) && !isMe(f.name))) {
      if (conv.kind !== "dm") conv.members.delete(k);
      event(conv, [nameNode(f.name), textNode(" left the chat"), ...said]);
    }
  }
  renderMembers();
}

function onTopic(f) {
  const conv = room(f.room);
  if (f.setter) {
    conv.topic = { setter: f.setter, text: f.text };
    event(conv, [textNode("topic: "), textNode(f.text, "text"), textNode(" (set by "), nameNode(f.setter), textNode(")")]);
  } else {
    event(conv, [textNode("no topic is set")]);
  }
  if (state.current === conv.key) renderPane();
}

function onRooms(f) {
  for (const [name] of f.pairs) state.knownRooms.set(key(name), name);
  notice(f.pairs.length ? "rooms: " + f.pairs.map(([r, n]) => `${r} (${n})`).join(", ")
    : "there are no rooms yet: /join #name makes one");
}

function onHistory(f) {
  const conv = f.room ? room(f.room) : lobby();
  const asked = (state.historyAsked.get(conv.key) || []).shift() || { auto: false };
  state.reply = { conv, auto: asked.auto, left: f.count, items: [] };
  if (f.count === 0) finishHistory();
}

function onHist(f) {
  const reply = state.reply;
  if (!reply) return;
  reply.items.push(f);
  reply.left -= 1;
  if (reply.left <= 0) finishHistory();
}

// Puts a history reply in its conversation. Asked for by the person
// (/history), it is shown whole. Asked for automatically (a room opened, the
// connection came back), only what is not on screen yet is added: the
// messages that came live while the request was out end the reply, and
// what was shown before the drop overlaps its start.
function finishHistory() {
  const { conv, auto, items } = state.reply;
  state.reply = null;
  if (!auto) {
    event(conv, [textNode(items.length ? `history of ${place(conv)}:` : `no messages in ${place(conv)} yet`)]);
    for (const h of items) append(conv, messageNode(h.from, h.text, { time: h.time, hist: true }));
    if (items.length) event(conv, [textNode("end of history")]);
    return;
  }
  const since = conv.since || [];
  conv.since = null;
  let fresh = items;
  const same = (h, m) => key(h.from) === key(m.from) && h.text === m.text;
  if (since.length <= fresh.length && since.every((m, i) => same(fresh[fresh.length - since.length + i], m))) {
    fresh = fresh.slice(0, fresh.length - since.length);
  }
  const before = conv.messages.slice(0, conv.messages.length - since.length);
  const known = overlap(fresh, before);
  // A conversation just opened gets its past above everything; one that
  // comes back after a drop, before what came live since.
  const anchor = !before.length ? conv.log.firstChild : since.length ? since[0].el : null;
  const missed = fresh.slice(known);
  if (!missed.length) return;
  const label = before.length ? "while you were away" : "earlier messages";
  append(conv, lineNode("divider", [textNode(label)]), anchor);
  const records = missed.map((h) => {
    const el = messageNode(h.from, h.text, { time: h.time, hist: true });
    append(conv, el, anchor);
    return { from: h.from, text: h.text, el };
  });
  conv.messages.splice(before.length, 0, ...records);
}

// How many of `history`'s first messages are already the last of `shown`.
function overlap(history, shown) {
  if (!shown.length) return 0;
  const same = (h, m) => key(h.from) === key(m.from) && h.text === m.text;
  for (let j = history.length; j > 0; j -= 1) {
    const m = Math.min(j, shown.length);
    let match = true;
    for (let i = 1; i <= m && match; i += 1) match = same(history[j - i], shown[shown.length - i]);
    if (match) return j;
  }
  return 0;
}

const place = (conv) => (conv.kind === "lobby" ? "the lobby" : conv.title);

function onError(f) {
  if (CLOSING.has(f.code)) link.closing = f;
  if (!link.loggedIn) {
    // A refused login: beside the field the first time, in the status after a drop.
    if (!link.everIn) return loginFailed(loginRefusal(state.name, f.code, f.detail), f.code);
    if (LOGIN_FINAL.has(f.code)) {
      link.quitting = true;
      link.ws.close();
      return backToLogin(loginRefusal(state.name, f.code, f.detail));
    }
    // The old connection may still hold the name: try again later.
    if (!CLOSING.has(f.code)) link.ws.close();
    return undefined;
  }
  if (FINAL.has(f.code)) return undefined; // said when the connection closes
  if (f.code === "not-in-room" || f.code === "bad-count") {
    // The answer to a HISTORY whose room is gone: nothing more is coming.
    for (const conv of state.conversations.values()) conv.since = null;
  }
  return problem(capitalise(errorWords(f.code, f.detail)), f.code, f.detail);
}

// ---------------------------------------------------------------------------
// Commands typed in the message line, as chat-client has them.

const HELP = [
  ["/join #room", "enter a room (made if new); it comes into view"],
  ["/part [#room] [text]", "leave a room, the one in view by default (/leave too)"],
  ["/go [#room]", "view a room you are in; the lobby without one"],
  ["/msg name text", "a message to one person only"],
  ["/topic [text]", "show the room's topic, or set it"],
  ["/who [#room]", "list who is here, or in #room; /who lobby: everyone"],
  ["/rooms", "list the rooms and how many are in each"],
  ["/history [n]", "show the last n (50) messages here"],
  ["/quit [text]", "leave the chat, with an optional parting text"],
  ["/register", "register your name: it then logs in only with a password"],
  ["/password", "change your password"],
  ["/unregister", "your name is no longer registered"],
  ["/kick name [text]", "operators: close someone's connection"],
  ["/ban name duration [text]", "operators: keep a name and its address out (10m, 2h, 7d)"],
  ["/unban name", "operators: lift a ban"],
  ["/mute name duration [text]", "operators: refuse someone's messages for a while"],
  ["/unmute name", "operators: lift a mute"],
  ["/bans", "operators: list the bans in force"],
  ["/help", "show this help"],
  ["//text", "send a message that starts with /"],
  ["Tab", "complete a command, a name or a room; Up and Down: earlier lines"],
];
const WORDS = HELP.map(([form]) => form.split(" ")[0]).filter((w) => /^\/[a-z]+$/.test(w)).concat("/leave").sort();
const DURATION_RE = /^[1-9][0-9]*[smhd]$/;

// Runs one typed line; returns false when it was not sent (kept in the field).
function run(line) {
  if (isBlank(line)) return true;
  const conv = conversation(state.current);
  if (!line.startsWith("/") || line.startsWith("//")) {
    return say(conv, line.startsWith("//") ? line.slice(1) : line);
  }
  const [word, argument] = cut(line.slice(1));
  const arg = argument.trim();
  const usage = (form, why) => { problem(`${why}: ${form}`); return false; };
  const roomArg = (form) => {
    if (ROOM_RE.test(arg)) return arg;
    if (!arg) return usage(form, "name a room");
    if (ROOM_RE.test("#" + arg)) return usage(form, `rooms start with #, as in #${arg}`);
    return usage(form, `“${arg}” is not a room`);
  };
  switch (word.toLowerCase()) {
    case "join": {
      const r = roomArg("/join #room");
      if (!r) return false;
      const existing = conversation(key(r));
      if (existing && existing.joined) { show(existing.key); return true; }
      state.pendingJoins.add(key(r));
      return send(`JOIN ${r}`);
    }
    case "part": case "leave": {
      const [first, rest] = cut(arg);
      const named = first.startsWith("#");
      const target = named ? first : conv.kind === "room" ? conv.title : null;
      if (!target) return usage("/part [#room] [text]", "you are not in a room here");
      const text = (named ? rest : arg).trim();
      return send(text ? `PART ${target} ${text}` : `PART ${target}`);
    }
    case "go": {
      if (!arg || arg.toLowerCase() === "lobby") { show(LOBBY); return true; }
      const r = roomArg("/go [#room]");
      if (!r) return false;
      const target = conversation(key(r));
      if (!target || !target.joined) return usage("/join #room", `you are not in ${r}`);
      show(target.key);
      return true;
    }
    case "msg": {
      const [to, text] = cut(argument.replace(/^ +/, ""));
      if (!to) return usage("/msg name text", "name someone");
      if (!NAME_RE.test(to)) return usage("/msg name text", `“${to}” is not a name`);
      if (isBlank(text)) return usage("/msg name text", `say something to ${to}`);
      return send(`TELL ${to} ${text}`);
    }
    case "topic": {
      if (conv.kind !== "room") return usage("/topic [text]", "topics belong to rooms");
      return send(isBlank(argument) ? `TOPIC ${conv.title}` : `TOPIC ${conv.title} ${argument}`);
    }
    case "who": {
      if (!arg && conv.kind === "room") { state.whoAsked.add(conv.key); return send(`WHO ${conv.title}`); }
      if (!arg || arg.toLowerCase() === "lobby") { state.whoAsked.add(LOBBY); return send("WHO"); }
      const r = roomArg("/who [#room]");
      if (!r) return false;
      state.whoAsked.add(key(r));
      return send(`WHO ${r}`);
    }
    case "rooms": return send("ROOMS");
    case "history": {
      if (arg && !/^[1-9][0-9]*$/.test(arg)) return usage("/history [n]", "n is a number from 1");
      if (conv.kind === "dm") return usage("/history [n]", "direct messages are not kept");
      askHistory(conv, false, arg || AUTO_HISTORY);
      return true;
    }
    case "quit": logout(arg); return true;
    case "register": case "password": case "unregister":
      if (arg) return usage(`/${word.toLowerCase()}`, "not sent: type it alone; the password is asked for where it does not show");
      askPasswords(word.toLowerCase());
      return true;
    case "kick": {
      const [name, text] = cut(arg);
      if (!NAME_RE.test(name)) return usage("/kick name [text]", name ? `“${name}” is not a name` : "name someone");
      return send(text.trim() ? `KICK ${name} ${text.trim()}` : `KICK ${name}`);
    }
    case "ban": case "mute": {
      const form = `/${word.toLowerCase()} name duration [text]`;
      const [name, rest] = cut(arg);
      const [duration, text] = cut(rest.trim());
      if (!NAME_RE.test(name)) return usage(form, name ? `“${name}” is not a name` : "name someone");
      if (!DURATION_RE.test(duration)) return usage(form, ERROR_WORDS["bad-duration"]);
      const verb = word.toUpperCase();
      return send(text.trim() ? `${verb} ${name} ${duration} ${text.trim()}` : `${verb} ${name} ${duration}`);
    }
    case "unban": case "unmute": {
      if (!NAME_RE.test(arg)) return usage(`/${word.toLowerCase()} name`, arg ? `“${arg}” is not a name` : "name someone");
      return send(`${word.toUpperCase()} ${arg}`);
    }
    case "bans": return send("BANS");
    case "help":
      for (const [form, what] of HELP) event(conv, [textNode(form, "code"), textNode(`  ${what}`)]);
      return true;
    default:
      return usage("/help", `/${word} is not a command`);
  }
}

// Plain text goes where the person is looking.
function say(conv, text) {
  const frame = conv.kind === "lobby" ? `MSG ${text}`
    : conv.kind === "room" ? `SAY ${conv.title} ${text}` : `TELL ${conv.title} ${text}`;
  if (bytes(frame) > MAX_LINE) {
    problem(`not sent: a message here holds at most ${MAX_LINE - bytes(frame) + bytes(text)} bytes, this one has ${bytes(text)}`);
    return false;
  }
  if (/[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/.test(text)) {
    problem("not sent: control characters cannot be sent");
    return false;
  }
  if (conv.kind === "room" && !conv.joined) {
    problem(`not sent: you are not in ${conv.title} (/join ${conv.title})`);
    return false;
  }
  return send(frame);
}

// /register, /password and /unregister: passwords in a dialog, never in the line.
function askPasswords(what) {
  const dialog = $("password-dialog");
  const fields = {
    register: [["new", "Password"], ["again", "Password again"]],
    password: [["old", "Current password"], ["new", "New password"], ["again", "New password again"]],
    unregister: [["old", "Password"]],
  }[what];
  $("password-dialog-title").textContent = { register: "Register your name",
    password: "Change your password", unregister: "Unregister your name" }[what];
  $("password-dialog-text").textContent = what === "unregister"
    ? "Anyone may then log in with your name." : `Then ${state.me} logs in only with the password. ${capitalise(PASSWORD_RULES)}.`;
  const holder = $("password-fields");
  holder.replaceChildren();
  for (const [id, label] of fields) {
    const l = document.createElement("label");
    l.htmlFor = `pw-${id}`;
    l.textContent = label;
    const input = document.createElement("input");
    input.type = "password";
    input.id = `pw-${id}`;
    input.autocomplete = id === "old" ? "current-password" : "new-password";
    holder.append(l, input);
  }
  $("password-error").textContent = "";
  dialog.dataset.what = what;
  dialog.showModal();
}

function submitPasswords(e) {
  e.preventDefault();
  const dialog = $("password-dialog");
  const value = (id) => ($(`pw-${id}`) ? $(`pw-${id}`).value : "");
  const what = dialog.dataset.what;
  const fresh = value("new");
  if (what !== "unregister") {
    if (fresh !== value("again")) { $("password-error").textContent = "The two passwords differ."; return; }
    if (/\s/.test(fresh) || bytes(fresh) < 8 || bytes(fresh) > 128) {
      $("password-error").textContent = capitalise(PASSWORD_RULES) + ".";
      return;
    }
  }
  const frame = { register: `REGISTER ${fresh}`, password: `PASSWORD ${value("old")} ${fresh}`,
    unregister: `UNREGISTER ${value("old")}` }[what];
  state.pendingPassword = what === "unregister" ? null : fresh;
  send(frame);
  dialog.close();
  $("input").focus();
}

// ---------------------------------------------------------------------------
// The message line: Enter sends, Up and Down recall earlier lines, Tab completes.

const recall = { lines: [], at: 0 };

function onInputKey(e) {
  const input = e.target;
  if (e.key !== "Tab" && e.key !== "Shift") completion.reset();
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    const line = input.value;
    if (run(line)) {
      if (!isBlank(line) && !/^\/(register|password|unregister)\b/i.test(line)) recall.lines.push(line);
      recall.at = recall.lines.length;
      input.value = "";
    }
  } else if (e.key === "ArrowUp" && recall.at > 0 && (input.value === "" || input.value === recall.lines[recall.at])) {
    e.preventDefault();
    recall.at -= 1;
    input.value = recall.lines[recall.at];
  } else if (e.key === "ArrowDown" && recall.at < recall.lines.length && input.value === recall.lines[recall.at]) {
    e.preventDefault();
    recall.at += 1;
    input.value = recall.lines[recall.at] || "";
  } else if (e.key === "Tab" && !e.altKey && !e.ctrlKey && !e.metaKey) {
    if (completion.step(input, e.shiftKey ? -1 : 1)) e.preventDefault();
  }
}

// Tab: the word before the cursor, completed from what the page knows; Tab
// again cycles. With nothing to complete, Tab moves the focus as usual.
const completion = {
  active: null,
  reset() { this.active = null; },
  step(input, direction) {
    if (!this.active) {
      const pos = input.selectionStart;
      const before = input.value.slice(0, pos);
      const start = before.lastIndexOf(" ") + 1;
      const word = before.slice(start);
      if (!word) return false;
      const options = candidates(input.value, start, word);
      if (!options.length) return false;
      this.active = { start, end: pos, options, index: direction > 0 ? -1 : 0 };
    }
    const a = this.active;
    a.index = (a.index + direction + a.options.length) % a.options.length;
    const text = a.options[a.index];
    input.value = input.value.slice(0, a.start) + text + input.value.slice(a.end);
    a.end = a.start + text.length;
    input.setSelectionRange(a.end, a.end);
    return true;
  },
};

function candidates(line, start, word) {
  const command = line.startsWith("/") && !line.startsWith("//");
  const match = (options, after) => [...new Set(options)]
    .filter((o) => key(o).startsWith(key(word)))
    .sort((a, b) => (key(a) < key(b) ? -1 : 1))
    .map((o) => o + after);
  const names = () => [...lobby().members.values()];
  const rooms = () => [...state.knownRooms.values(),
    ...[...state.conversations.values()].filter((c) => c.kind === "room" && c.joined).map((c) => c.title)];
  if (command && start === 0) return match(WORDS, " ");
  if (word.startsWith("#")) return match(rooms(), " ");
  return match(names(), !command && start === 0 ? ": " : " ");
}

// ---------------------------------------------------------------------------
// The page: logging in and out, the sidebar, the pane's buttons.

function loginFailed(text, code) {
  $("login-error").textContent = text;
  $("login-button").disabled = false;
  if (link.ws) { link.quitting = true; link.ws.close(); }
  const field = code === "name-registered" || code === "bad-password" || code === "not-registered"
    ? $("login-password") : $("login-name");
  field.focus();
  field.select();
}

function login(e) {
  e.preventDefault();
  const name = $("login-name").value.trim();
  const password = $("login-password").value;
  if (!NAME_RE.test(name)) return loginFailed(name ? `“${name}” cannot be a name: ${NAME_RULES}.` : "Enter a name.");
  if (/\s/.test(password)) return loginFailed("A password has no spaces.", "bad-password");
  $("login-error").textContent = "";
  $("login-button").disabled = true;
  state.name = name;
  state.password = password;
  link.quitting = false;
  link.everIn = false;
  link.attempt = 0;
  connect();
  return undefined;
}

// Back to the login form, with the reason, and everything forgotten.
function backToLogin(reason) {
  clearTimeout(link.timer);
  clearInterval(link.countdown);
  link.quitting = true;
  if (link.ws) link.ws.close();
  state.me = null;
  state.password = "";
  state.conversations.clear();
  state.knownRooms.clear();
  state.pendingJoins.clear();
  state.historyAsked.clear();
  state.reply = null;
  state.current = LOBBY;
  recall.lines = [];
  recall.at = 0;
  $("login-password").value = "";
  $("login-error").textContent = reason;
  $("login-button").disabled = false;
  $("chat-view").hidden = true;
  $("login-view").hidden = false;
  $("login-name").focus();
}

function logout(text) {
  if (link.ws && link.loggedIn) send(text ? `LEAVE ${text}` : "LEAVE");
  backToLogin("");
}

function wire() {
  try { $("login-name").value = localStorage.getItem("chat-name") || ""; } catch (_) { /* private mode */ }
  $("login-form").addEventListener("submit", login);
  $("input").addEventListener("keydown", onInputKey);
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("input");
    if (run(input.value)) input.value = "";
    input.focus();
  });
  $("conversations").addEventListener("click", (e) => {
    const button = e.target.closest("button.conv");
    if (button) { show(button.dataset.key); $("input").focus(); }
  });
  $("member-list").addEventListener("click", (e) => {
    const button = e.target.closest("button.member");
    if (!button || isMe(button.dataset.name)) return;
    show(dm(button.dataset.name).key);
    $("members").classList.remove("open");
    $("members-toggle").setAttribute("aria-expanded", "false");
    $("input").focus();
  });
  $("members-toggle").addEventListener("click", () => {
    const open = $("members").classList.toggle("open");
    $("members-toggle").setAttribute("aria-expanded", String(open));
  });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const field = $("join-room");
    let r = field.value.trim();
    if (r && !r.startsWith("#")) r = "#" + r;
    if (!ROOM_RE.test(r)) {
      $("join-error").textContent = r ? `${capitalise(ROOM_RULES)}.` : "Name a room, as in #rust.";
      return;
    }
    $("join-error").textContent = "";
    if (run(`/join ${r}`)) field.value = "";
  });
  $("leave-conv").addEventListener("click", () => {
    const conv = conversation(state.current);
    if (conv.kind === "room" && conv.joined) { send(`PART ${conv.title}`); return; }
    state.conversations.delete(conv.key);
    show(LOBBY);
  });
  $("logout").addEventListener("click", () => logout(""));
  $("retry-now").addEventListener("click", () => { link.attempt = 0; connect(); });
  $("password-form").addEventListener("submit", submitPasswords);
  $("password-cancel").addEventListener("click", () => $("password-dialog").close());
  $("login-name").focus();
}

wire();
})();
