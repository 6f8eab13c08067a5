// The playground page: a Telegram-like chat with the real bot, through the local Bot API server.
"use strict";

const USER_COMMANDS = ["/start", "/help", "/digit", "/flower", "/auto", "/stats", "/forget"];
const ADMIN_COMMANDS = ["/models", "/retrain digits", "/rollback digits", "/stats"];

const state = { people: [], current: null, chats: new Map(), ready: false };
const $ = (id) => document.getElementById(id);
// The server answers its API only to the page it served: this token is in that page and nowhere else.
const TOKEN = document.querySelector('meta[name="playground-token"]').content;
const pictures = new Map(); // file_id → object URL of the downloaded photo (an <img> cannot send the token)
const downloads = new Map(); // file_id → its download in flight
// Whether the chat shows its newest message: kept by the reader's scrolling, so content that grows
// later (a photo that finishes loading) keeps the newest message in view, but never pulls the reader
// back down while they read older messages.
const view = { pinned: true };
let pendingFile = null;

// The page's own words, in the language of the person chatting (the bot's answers come translated).
const WORDS = {
  en: {
    photo: "Photo", message: "Message", edited: "edited", empty: "Send a photo of a digit or a flower, or /help",
    placeholder: "Message, command or caption", caption: "Caption (optional)", asFile: "send as file",
    drop: "Drop a photo to send it", notSent: "not sent",
  },
  ru: {
    photo: "Фото", message: "Сообщение", edited: "изменено", empty: "Пришлите фото цифры или цветка, или /help",
    placeholder: "Сообщение, команда или подпись", caption: "Подпись (не обязательно)", asFile: "отправить файлом",
    drop: "Отпустите фото, чтобы отправить", notSent: "не отправлено",
  },
};
function words() {
  const person = state.people.find((p) => p.id === state.current);
  return WORDS[person?.language] || WORDS.en;
}

// ✅ / ❌ drawn as SVG, not as emoji glyphs: a machine without an emoji font shows the glyphs as empty
// boxes. The glyph stays in the icon's <title>, so the text still reads (and copies) as the bot sent it.
const SVG = "http://www.w3.org/2000/svg";
const ICONS = {
  "✅": [
    ["rect", { x: 1, y: 1, width: 22, height: 22, rx: 5, fill: "#3fb950" }],
    ["path", { d: "M6.5 12.5l3.8 3.8 7.4-8.6", fill: "none", stroke: "#fff", "stroke-width": 2.8,
      "stroke-linecap": "round", "stroke-linejoin": "round" }],
  ],
  "❌": [
    ["path", { d: "M5 5l14 14M19 5L5 19", fill: "none", stroke: "#e5484d", "stroke-width": 3.6,
      "stroke-linecap": "round" }],
  ],
  "📄": [
    ["path", { d: "M6 2.5h8l4.5 4.5v14.5H6z", fill: "#fff" }],
    ["path", { d: "M14 2.5V7h4.5M8.5 11.5h7M8.5 14.5h7M8.5 17.5h5", fill: "none", stroke: "#3390ec",
      "stroke-width": 1.4, "stroke-linecap": "round" }],
  ],
};
const ICON_GLYPHS = new RegExp(`(${Object.keys(ICONS).join("|")})`, "u");

function icon(glyph) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "icon");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", glyph);
  const title = document.createElementNS(SVG, "title");
  title.textContent = glyph;
  svg.append(title);
  for (const [tag, attributes] of ICONS[glyph]) {
    const part = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) part.setAttribute(name, value);
    svg.append(part);
  }
  return svg;
}

// Text as nodes, with the glyphs that have an icon drawn as that icon.
function withIcons(text) {
  return text.split(ICON_GLYPHS).filter(Boolean).map((part) => (ICONS[part] ? icon(part) : part));
}

function chatOf(userId) {
  if (!state.chats.has(userId)) state.chats.set(userId, { after: 0, messages: new Map(), order: [] });
  return state.chats.get(userId);
}

async function call(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("X-Playground-Token", TOKEN);
  const response = await fetch(path, { ...options, headers, credentials: "same-origin" });
  if (response.status === 403 && !call.reloading) {
    // The playground was restarted: its token is new, and only a page it serves now carries it.
    call.reloading = true;
    $("bot-status").textContent = "playground restarted: reloading…";
    location.reload();
  }
  if (!response.ok) throw new Error((await response.text()) || response.statusText);
  return response;
}

async function api(path, options = {}) {
  const response = await call(path, options);
  return response.headers.get("content-type")?.includes("json") ? response.json() : response.text();
}

function download(fileId) {
  if (!downloads.has(fileId)) {
    const done = call(`/api/file/${encodeURIComponent(fileId)}`)
      .then((response) => response.blob())
      .then((blob) => {
        pictures.set(fileId, URL.createObjectURL(blob));
        return pictures.get(fileId);
      })
      .finally(() => downloads.delete(fileId));
    downloads.set(fileId, done);
  }
  return downloads.get(fileId);
}

function showPicture(img, fileId) {
  img.addEventListener("load", keepPinned);
  if (pictures.has(fileId)) {
    img.src = pictures.get(fileId); // at once, so a re-render does not make the chat jump
    return;
  }
  download(fileId)
    .then((url) => (img.src = url))
    .catch(() => (img.alt = "photo (could not load)"));
}

function toast(text, alert = false) {
  const box = $("toast");
  box.textContent = text;
  box.className = alert ? "toast alert" : "toast";
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.hidden = true), alert ? 4000 : 2200);
}

function setStatus(ready) {
  state.ready = ready;
  $("bot-status").textContent = ready ? "bot" : "starting… (loading the models)";
  $("bot-status").className = ready ? "status online" : "status";
}

function apply(userId, event) {
  const chat = chatOf(userId);
  chat.after = Math.max(chat.after, event.rev);
  if (event.type === "message" || event.type === "edit") {
    const message = event.message;
    if (!chat.messages.has(message.message_id)) chat.order.push(message.message_id);
    chat.messages.set(message.message_id, message);
  } else if (event.type === "delete") {
    chat.messages.delete(event.message_id);
    chat.order = chat.order.filter((id) => id !== event.message_id);
  } else if (event.type === "clear") {
    // /forget: the bot deleted what it kept about this person; the playground drops its copy too.
    const keep = new Set(event.keep || []);
    for (const id of chat.order) if (!keep.has(id)) chat.messages.delete(id);
    chat.order = chat.order.filter((id) => keep.has(id));
  } else if (event.type === "callback_answer" && event.text && userId === state.current) {
    toast(event.text, event.show_alert);
  }
}

async function follow(userId) {
  for (;;) {
    const chat = chatOf(userId);
    try {
      const answer = await api(`/api/events?user=${userId}&after=${chat.after}`);
      setStatus(answer.ready);
      for (const event of answer.events) apply(userId, event);
      if (answer.events.length && userId === state.current) render();
    } catch (error) {
      $("bot-status").textContent = "playground stopped";
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

function bestPhoto(sizes) {
  const fitting = sizes.filter((s) => Math.max(s.width, s.height) <= 1280);
  return (fitting.length ? fitting : sizes).at(-1);
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.append(...withIcons(text));
  return node;
}

function distanceFromBottom(box) {
  return box.scrollHeight - box.scrollTop - box.clientHeight;
}

function scrollToNewest() {
  const box = $("chat");
  box.scrollTop = box.scrollHeight;
  view.pinned = true;
}

// A photo that finished loading made the chat taller: keep the newest message in view if it was.
function keepPinned() {
  if (view.pinned) scrollToNewest();
}

function renderMessage(message) {
  const mine = !message.from.is_bot;
  const bubble = element("div", mine ? "msg mine" : "msg");
  bubble.dataset.messageId = message.message_id;
  if (message.reply_to_message) {
    const quoted = message.reply_to_message;
    const what =
      quoted.text || quoted.caption || (quoted.photo ? words().photo : quoted.document?.file_name || words().message);
    bubble.append(element("div", "quote", what));
  }
  if (message.photo) {
    const img = element("img");
    const best = bestPhoto(message.photo);
    img.alt = "photo";
    img.width = best.width; // the box has its final size before the photo arrives
    img.height = best.height;
    showPicture(img, best.file_id);
    bubble.append(img);
  }
  if (message.document) {
    const doc = element("div", "doc");
    doc.append(element("div", "file-icon", "📄"), element("div", "", message.document.file_name || "file"));
    bubble.append(doc);
  }
  for (const kind of ["sticker", "video", "voice", "audio", "animation", "video_note"]) {
    if (message[kind]) bubble.append(element("div", "", `[${kind.replace("_", " ")}]`));
  }
  const text = message.text ?? message.caption;
  if (text) bubble.append(element("div", "text", text));
  const time = new Date(message.date * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  bubble.append(element("div", "meta", message.edit_date ? `${words().edited} ${time}` : time));
  const nodes = [bubble];
  const rows = message.reply_markup?.inline_keyboard;
  if (rows) {
    const keyboard = element("div", "keyboard");
    keyboard.dataset.messageId = message.message_id;
    for (const row of rows) {
      const line = element("div", "row");
      for (const button of row) {
        const node = element("button", "", button.text);
        node.type = "button";
        node.setAttribute("aria-label", button.text);
        node.addEventListener("click", () => press(message.message_id, button.callback_data, node));
        line.append(node);
      }
      keyboard.append(line);
    }
    nodes.push(keyboard);
  }
  return nodes;
}

function render() {
  const box = $("chat");
  const top = box.scrollTop;
  box.replaceChildren();
  const chat = chatOf(state.current);
  if (!chat.order.length) box.append(element("div", "system", words().empty));
  for (const id of chat.order) box.append(...renderMessage(chat.messages.get(id)));
  if (view.pinned || renderMessage.forceScroll) scrollToNewest();
  else box.scrollTop = top; // reading older messages: stay where the reader is
  renderMessage.forceScroll = false;
}

async function press(messageId, data, node) {
  node.disabled = true;
  try {
    await api("/api/press", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: state.current, message_id: messageId, data }),
    });
  } catch (error) {
    toast(error.message, true);
    node.disabled = false;
  }
}

// `text`, with the chosen photo when `withFile` (the composer): a command button sends its command alone
// and leaves the photo waiting.
async function send(text, withFile = false) {
  const form = new FormData();
  form.append("user", state.current);
  form.append("text", text);
  const file = withFile ? pendingFile : null;
  if (file) {
    form.append("file", file, file.name || "pasted.png");
    if ($("as-file").checked) form.append("as_file", "1");
  }
  renderMessage.forceScroll = true;
  await api("/api/send", { method: "POST", body: form });
  if (file) clearFile();
}

function chooseFile(file) {
  pendingFile = file;
  $("preview").hidden = false;
  $("preview-name").textContent = file.name || "pasted image";
  const img = $("preview-img");
  if (file.type.startsWith("image/")) {
    img.src = URL.createObjectURL(file);
    img.hidden = false;
  } else {
    img.hidden = true;
  }
  $("text").placeholder = words().caption;
  $("text").focus();
}

function clearFile() {
  pendingFile = null;
  $("file").value = "";
  $("as-file").checked = false;
  $("preview").hidden = true;
  $("text").placeholder = words().placeholder;
}

function renderPeople() {
  const box = $("people");
  box.replaceChildren();
  for (const person of state.people) {
    const tab = element("button", "", person.role === "admin" ? `${person.name} (admin)` : person.name);
    tab.type = "button";
    tab.setAttribute("role", "tab");
    tab.setAttribute("aria-selected", String(person.id === state.current));
    tab.addEventListener("click", () => switchTo(person.id));
    box.append(tab);
  }
  const person = state.people.find((p) => p.id === state.current);
  $("language").value = person.language;
  document.documentElement.lang = person.language;
  $("text").placeholder = pendingFile ? words().caption : words().placeholder;
  $("as-file-label").textContent = words().asFile;
  $("drop").textContent = words().drop;
  const commands = $("commands");
  commands.replaceChildren();
  const list = person.role === "admin" ? [...USER_COMMANDS.slice(0, 2), ...ADMIN_COMMANDS] : USER_COMMANDS;
  for (const command of list) {
    const node = element("button", USER_COMMANDS.includes(command) ? "" : "admin", command);
    node.type = "button";
    node.addEventListener("click", () => send(command).catch((error) => toast(error.message, true)));
    commands.append(node);
  }
}

function switchTo(userId) {
  if (userId !== state.current) {
    clearFile(); // a draft is its writer's: never sent as someone else
    $("text").value = "";
  }
  state.current = userId;
  renderMessage.forceScroll = true;
  renderPeople();
  render();
}

function wire() {
  // Only the reader unpins the view (wheel, touch, keys, the scroll bar): a re-render or a photo that
  // loads also fires "scroll" events, which must not leave the newest message off-screen.
  const readerScrolled = () =>
    requestAnimationFrame(() => (view.pinned = distanceFromBottom($("chat")) < 80));
  for (const kind of ["wheel", "touchmove", "keydown", "pointerup"]) {
    $("chat").addEventListener(kind, readerScrolled, { passive: true });
  }
  $("chat").addEventListener("scroll", () => {
    if (distanceFromBottom($("chat")) < 80) view.pinned = true;
  });
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    const button = $("composer").querySelector('button[type="submit"]');
    if ((!text && !pendingFile) || button.disabled) return;
    button.disabled = true; // a double click sends once
    try {
      await send(text, true);
      $("text").value = ""; // kept when the send failed, to send again
    } catch (error) {
      toast(`${words().notSent}: ${error.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
  $("file").addEventListener("change", () => $("file").files[0] && chooseFile($("file").files[0]));
  $("preview-clear").addEventListener("click", clearFile);
  $("language").addEventListener("change", async () => {
    const person = state.people.find((p) => p.id === state.current);
    const language = $("language").value;
    try {
      await api("/api/language", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user: state.current, language }),
      });
      person.language = language;
      renderPeople(); // the page's own words follow
      render();
    } catch (error) {
      $("language").value = person.language; // not saved: show what the bot still uses
      toast(error.message, true);
    }
  });
  const drop = $("drop");
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.hidden = false;
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) drop.hidden = true;
  });
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.hidden = true;
    const file = event.dataTransfer?.files?.[0];
    if (file) chooseFile(file);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])][0];
    if (file) {
      event.preventDefault();
      chooseFile(file);
    }
  });
}

async function main() {
  wire();
  const initial = await api("/api/state");
  $("bot-name").textContent = initial.bot.name;
  document.title = `${initial.bot.name} — playground`;
  setStatus(initial.ready);
  state.people = initial.people;
  state.current = initial.people[0].id;
  renderPeople();
  render();
  for (const person of initial.people) follow(person.id);
}

main();
