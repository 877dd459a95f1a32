// Chat page behaviour that HTML alone cannot express: Enter to send, one id per message
// (so a double click or a resend after reconnecting makes one turn), the hello that
// resynchronises the page after a reconnect, scrolling, copy buttons.

const chat = document.getElementById("chat");
const composer = document.getElementById("composer");
const prompt = document.getElementById("prompt");
const scroller = document.getElementById("scroller");
const connection = document.getElementById("connection");

let clientId = newId();
let awaitingTurn = false;
let stickToBottom = true;

function newId() {
  return (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random()}`;
}

function running() {
  const state = document.getElementById("turn-state");
  return state && state.dataset.running === "true";
}

function sessionId() {
  const input = document.getElementById("session-id");
  return input ? input.value : "";
}

function lastTurnId() {
  const turns = document.querySelectorAll("#messages > .turn");
  if (!turns.length) return 0;
  return Number(turns[turns.length - 1].id.replace("turn-", "")) || 0;
}

function scrollToBottom() {
  scroller.scrollTop = scroller.scrollHeight;
}

function addCodeCopyButtons(root) {
  root.querySelectorAll(".msg:not(.status-streaming) .markdown pre").forEach((pre) => {
    if (pre.parentElement.classList.contains("code-wrap")) return;
    const wrap = document.createElement("div");
    wrap.className = "code-wrap";
    pre.replaceWith(wrap);
    wrap.append(pre);
    const button = document.createElement("button");
    button.type = "button";
    button.className = "small ghost copy-code";
    button.textContent = "Copy";
    wrap.append(button);
  });
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Copy failed";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function autosize() {
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, 240)}px`;
}

if (chat && composer) {
  chat.addEventListener("htmx:wsOpen", (event) => {
    connection.dataset.state = "open";
    const hello = { action: "hello", session_id: sessionId(), last_turn: lastTurnId() };
    event.detail.socketWrapper.send(JSON.stringify(hello));
  });
  chat.addEventListener("htmx:wsClose", () => { connection.dataset.state = "closed"; });

  composer.addEventListener("htmx:wsConfigSend", (event) => {
    if (event.target !== composer) return;
    const hasFiles = composer.querySelector("input[name=attachment_ids]");
    if (running() || (!prompt.value.trim() && !hasFiles)) {
      event.preventDefault();
      return;
    }
    event.detail.parameters.client_id = clientId;
    awaitingTurn = true;
  });
  composer.addEventListener("htmx:wsAfterSend", (event) => {
    if (event.target !== composer) return;
    prompt.value = "";
    autosize();
    stickToBottom = true;
  });

  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!running()) composer.requestSubmit();
    }
  });
  prompt.addEventListener("input", autosize);

  scroller.addEventListener("scroll", () => {
    stickToBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  });

  chat.addEventListener("htmx:wsAfterMessage", () => {
    if (awaitingTurn && running()) {
      // The server has the turn: the next message gets a new id.
      awaitingTurn = false;
      clientId = newId();
    }
    const input = document.getElementById("session-id");
    const id = sessionId();
    if (id && input.dataset.exists === "true" && location.pathname === "/") {
      history.replaceState(null, "", `/c/${encodeURIComponent(id)}/`);
    }
    addCodeCopyButtons(document);
    if (stickToBottom) scrollToBottom();
  });

  document.addEventListener("click", (event) => {
    const target = event.target;
    if (!(target instanceof HTMLElement)) return;
    if (target.classList.contains("copy-message")) {
      const body = document.querySelector(target.dataset.copyTarget);
      if (body) copyText(body.innerText, target);
    } else if (target.dataset.suggestionText) {
      prompt.value = target.dataset.suggestionText;
      autosize();
      prompt.focus();
    } else if (target.classList.contains("copy-code")) {
      copyText(target.parentElement.querySelector("pre").innerText, target);
    }
  });

  addCodeCopyButtons(document);
  scrollToBottom();
}
