// The local console (local/console.py): reads /console/state, and reads it again on
// every broadcast the database's triggers send (relayed on /console/events).
"use strict";

const sessionsEl = document.getElementById("sessions");
const eventsEl = document.getElementById("events");
const liveEl = document.getElementById("live");
const errorEl = document.getElementById("error");
const template = document.getElementById("session-template");
const cards = new Map(); // session id -> its <article>
const MAX_EVENTS = 50;

function when(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }) : "—";
}

function field(card, name) {
  return card.querySelector(`[data-field="${name}"]`);
}

function setTime(el, iso) {
  el.textContent = when(iso);
  el.dateTime = iso || "";
}

function renderChats(container, chats) {
  container.replaceChildren();
  if (!chats.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "No messages yet.";
    container.append(p);
    return;
  }
  for (const chat of chats) {
    const section = document.createElement("section");
    section.className = "chat";
    section.dataset.chatId = chat.id;
    const title = document.createElement("h3");
    title.textContent = `Chat with ${chat.contact}`;
    const list = document.createElement("ol");
    list.className = "messages";
    for (const message of chat.messages) {
      const item = document.createElement("li");
      item.className = "message";
      item.dataset.direction = message.direction;
      item.dataset.whatsappMessageId = message.whatsapp_message_id;
      const meta = document.createElement("span");
      meta.className = "meta";
      for (const [name, value] of [
        ["direction", message.direction === "inbound" ? "⬇ inbound" : "⬆ outbound"],
        ["type", message.type],
        ["sender", message.sender],
      ]) {
        const part = document.createElement("span");
        part.dataset.field = name;
        part.textContent = value;
        meta.append(part);
      }
      const time = document.createElement("time");
      setTime(time, message.sent_at);
      meta.append(time);
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = message.text || (message.media ? "" : `(${message.type})`);
      item.append(meta);
      if (message.media) item.append(renderMedia(message.type, message.media));
      item.append(text);
      list.append(item);
    }
    section.append(title, list);
    container.append(section);
  }
}

// A stored medium through its presigned URL: images and stickers inline, video and audio
// with a player, documents as a download link; otherwise its status (and why).
function renderMedia(type, media) {
  const box = document.createElement("div");
  box.className = "media";
  box.dataset.mediaStatus = media.status;
  if (media.status !== "stored" || !media.url) {
    box.textContent = media.status === "pending" ? "⏳ fetching media…" : `media ${media.status}: ${media.error || ""}`;
    return box;
  }
  let el;
  if (type === "image" || type === "sticker") {
    el = document.createElement("img");
    el.alt = type;
  } else if (type === "video" || type === "audio") {
    el = document.createElement(type);
    el.controls = true;
    el.preload = "metadata";
  } else {
    el = document.createElement("a");
    el.href = media.url;
    el.download = media.filename || "document";
    el.textContent = `📄 ${media.filename || "document"} (${media.size} bytes)`;
  }
  if (el.tagName !== "A") el.src = media.url;
  el.className = `media-${type}`;
  box.append(el);
  return box;
}

function render(state) {
  const seen = new Set();
  for (const session of state.sessions) {
    seen.add(session.id);
    let card = cards.get(session.id);
    if (!card) {
      card = template.content.firstElementChild.cloneNode(true);
      card.dataset.sessionId = session.id;
      cards.set(session.id, card);
    }
    sessionsEl.append(card); // keeps the server's order
    field(card, "account").textContent = session.account;
    const status = field(card, "status");
    status.textContent = session.status;
    status.dataset.status = session.status;
    field(card, "phone").textContent = session.phone_number || "number not known yet";
    field(card, "id").textContent = session.id;
    setTime(field(card, "updated"), session.updated_at);
    const figure = card.querySelector(".qr");
    const img = figure.querySelector("img");
    if (session.qr) {
      if (img.getAttribute("src") !== session.qr.image) img.src = session.qr.image;
      img.dataset.qrCode = session.qr.code;
      setTime(field(card, "qr-generated"), session.qr.generated_at);
      figure.hidden = false;
    } else {
      figure.hidden = true;
      img.removeAttribute("src");
      delete img.dataset.qrCode;
    }
    renderChats(card.querySelector(".chats"), session.chats);
  }
  for (const [id, card] of cards) {
    if (!seen.has(id)) {
      card.remove();
      cards.delete(id);
    }
  }
}

// One read at a time; a broadcast arriving meanwhile asks for one more.
let reading = false;
let again = false;
async function refresh() {
  if (reading) {
    again = true;
    return;
  }
  reading = true;
  try {
    do {
      again = false;
      const response = await fetch("/console/state", { cache: "no-store" });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      render(body);
      errorEl.hidden = true;
    } while (again);
  } catch (error) {
    errorEl.textContent = `Could not read the state: ${error.message}`;
    errorEl.hidden = false;
  } finally {
    reading = false;
  }
}

function logEvent(data) {
  const item = document.createElement("li");
  const payload = data.payload || {};
  const what = payload.status ? `status=${payload.status}${payload.qr_waiting ? " qr_waiting" : ""}` : "";
  const message = payload.message_type ? `${payload.direction} ${payload.message_type} ${payload.preview ?? ""}` : "";
  item.textContent = `${new Date().toLocaleTimeString()}  ${data.topic}  ${data.event}  ${what}${message}`;
  eventsEl.prepend(item);
  while (eventsEl.children.length > MAX_EVENTS) eventsEl.lastElementChild.remove();
}

const events = new EventSource("/console/events");
events.addEventListener("ready", () => {
  // Listening from now on: this read misses nothing that happened before.
  liveEl.dataset.state = "live";
  liveEl.textContent = "live";
  refresh();
});
events.addEventListener("broadcast", (event) => {
  logEvent(JSON.parse(event.data));
  refresh();
});
events.addEventListener("error", () => {
  liveEl.dataset.state = "reconnecting";
  liveEl.textContent = "reconnecting…";
});
refresh();
