// Composer attachments: pick (button), drop (onto the chat column) or paste files; each is
// uploaded at once to POST /api/uploads with a progress bar, then shown as a thumbnail or a PDF
// chip holding a hidden `attachment_ids` input, so htmx's ws-send sends the ids with the
// message. A chip removed before sending deletes its upload.

const chat = document.getElementById("chat");
const composer = document.getElementById("composer");
const prompt = document.getElementById("prompt");
const input = document.getElementById("attach-input");
const list = document.getElementById("composer-attachments");
const notices = document.getElementById("notices");

const UPLOADS = "/api/uploads";
// Uploads in flight, so sending waits for them and a removed pending chip aborts its request.
const pending = new Set();

function csrfToken() {
  const holder = composer.closest("[hx-headers]");
  if (holder) {
    try {
      const token = JSON.parse(holder.getAttribute("hx-headers"))["X-CSRFToken"];
      if (token) return token;
    } catch {
      // Fall back to the cookie below.
    }
  }
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function sessionId() {
  const field = document.getElementById("session-id");
  return field ? field.value : "";
}

function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function notify(message) {
  if (!notices) return;
  const notice = document.createElement("div");
  notice.className = "notice notice-error attachment-notice";
  notice.setAttribute("role", "alert");
  notice.textContent = message;
  notices.append(notice);
  setTimeout(() => notice.remove(), 8000);
}

function clearNotices() {
  if (notices) notices.querySelectorAll(".attachment-notice").forEach((n) => n.remove());
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function removeButton(label) {
  const button = el("button", "composer-attachment-remove", "×");
  button.type = "button";
  button.setAttribute("aria-label", `Remove ${label}`);
  return button;
}

// The same markup as templates/attachments/composer_chip.html, built from the upload response.
function chipFor(attachment) {
  const kind = attachment.metadata.kind;
  const filename = attachment.metadata.filename || (kind === "image" ? "image" : "document.pdf");
  const chip = el("li", `composer-attachment composer-attachment-${kind}`);
  chip.dataset.attachmentId = attachment.id;
  const hidden = document.createElement("input");
  hidden.type = "hidden";
  hidden.name = "attachment_ids";
  hidden.value = attachment.id;
  chip.append(hidden);
  if (kind === "image") {
    const img = el("img", "attachment-thumb");
    img.src = attachment.displayUrl;
    img.alt = filename;
    img.title = `${filename} · ${formatSize(attachment.sizeBytes)}`;
    chip.append(img);
  } else {
    chip.append(el("span", "attachment-chip-icon", "PDF"));
    chip.lastChild.setAttribute("aria-hidden", "true");
    chip.append(el("span", "attachment-chip-name", filename));
    chip.append(el("span", "attachment-chip-size muted", formatSize(attachment.sizeBytes)));
  }
  const remove = removeButton(filename);
  remove.dataset.removeAttachment = attachment.id;
  chip.append(remove);
  return chip;
}

function errorMessage(xhr, file) {
  let detail = "";
  try {
    detail = JSON.parse(xhr.responseText).detail || "";
  } catch {
    // Not JSON (a proxy's page, a dropped connection): say what we know.
  }
  const name = file.name || "The file";
  if (xhr.status === 413) return `${name} is too large. ${detail}`.trim();
  if (xhr.status === 415) return `${name} was refused: ${detail || "unsupported file type"}.`;
  if (xhr.status === 400) return `${name} was refused: ${detail || "the file is empty"}.`;
  if (xhr.status === 403) return "Your session has expired: reload the page to upload files.";
  if (detail) return `${name} could not be uploaded: ${detail}`;
  return `${name} could not be uploaded (network error or server unavailable).`;
}

function upload(file) {
  const label = file.name || "pasted image";
  const chip = el("li", "composer-attachment uploading");
  const name = el("span", "attachment-chip-name", label);
  const progress = el("progress", "upload-progress");
  progress.max = 100;
  progress.value = 0;
  progress.setAttribute("aria-label", `Uploading ${label}`);
  const cancel = removeButton(label);
  chip.append(name, progress, cancel);
  list.append(chip);

  const xhr = new XMLHttpRequest();
  pending.add(xhr);
  cancel.addEventListener("click", () => {
    xhr.abort();
    pending.delete(xhr);
    chip.remove();
  });
  xhr.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) progress.value = Math.round((event.loaded / event.total) * 100);
  });
  xhr.addEventListener("loadend", () => {
    pending.delete(xhr);
    if (!chip.isConnected) return; // cancelled
    if (xhr.status === 201) {
      chip.replaceWith(chipFor(JSON.parse(xhr.responseText).attachment));
      return;
    }
    chip.remove();
    notify(errorMessage(xhr, file));
  });
  xhr.open("POST", UPLOADS);
  xhr.setRequestHeader("X-CSRFToken", csrfToken());
  xhr.setRequestHeader("Accept", "application/json");
  const form = new FormData();
  form.append("session_id", sessionId());
  form.append("file", file, file.name || "pasted-image");
  xhr.send(form);
}

function uploadAll(files) {
  if (!files || !files.length) return;
  clearNotices();
  for (const file of files) upload(file);
}

async function removeAttachment(chip, id) {
  chip.classList.add("removing");
  try {
    const response = await fetch(`${UPLOADS}/${encodeURIComponent(id)}`, {
      method: "DELETE",
      headers: { "X-CSRFToken": csrfToken() },
      credentials: "same-origin",
    });
    // 404: already gone (cleaned up, or removed in another tab); the chip goes either way.
    if (!response.ok && response.status !== 404) throw new Error(String(response.status));
    chip.remove();
  } catch {
    chip.classList.remove("removing");
    notify("The attachment could not be removed; try again.");
  }
}

function filesOf(dataTransfer) {
  if (!dataTransfer) return [];
  if (dataTransfer.files && dataTransfer.files.length) return Array.from(dataTransfer.files);
  return Array.from(dataTransfer.items || [])
    .filter((item) => item.kind === "file")
    .map((item) => item.getAsFile())
    .filter(Boolean);
}

function hasFiles(event) {
  return event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
}

if (chat && composer && input && list) {
  input.addEventListener("change", () => {
    uploadAll(Array.from(input.files));
    input.value = ""; // picking the same file again is a new upload
  });

  list.addEventListener("click", (event) => {
    const button = event.target.closest("[data-remove-attachment]");
    if (!button) return;
    removeAttachment(button.closest(".composer-attachment"), button.dataset.removeAttachment);
  });

  // Pasting files (a screenshot, a copied image) attaches them; pasting text stays text.
  document.addEventListener("paste", (event) => {
    const files = filesOf(event.clipboardData);
    if (!files.length) return;
    event.preventDefault();
    uploadAll(files);
  });

  // Drop files anywhere on the chat column; the column is highlighted while dragging over it.
  let depth = 0;
  chat.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    chat.classList.add("drop-target");
  });
  chat.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  chat.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) chat.classList.remove("drop-target");
  });
  chat.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    chat.classList.remove("drop-target");
    uploadAll(filesOf(event.dataTransfer));
    prompt.focus();
  });

  // Runs before chat.js's own listener (capture on the ancestor): a message must not leave
  // without the files still uploading.
  chat.addEventListener(
    "htmx:wsConfigSend",
    (event) => {
      if (event.target !== composer || !pending.size) return;
      event.preventDefault();
      notify("Wait for the upload to finish, then send.");
    },
    true,
  );
  // Sent: the files now belong to the message (its history shows them).
  composer.addEventListener("htmx:wsAfterSend", (event) => {
    if (event.target !== composer) return;
    list.querySelectorAll(".composer-attachment:not(.uploading)").forEach((chip) => chip.remove());
    clearNotices();
  });
}
