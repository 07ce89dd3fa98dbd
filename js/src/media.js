// Blob URLs for the view's images. Python sends them as `media` messages, one
// buffer per image ({type: "media", items: [{key, mime}]}), once per key, and all
// of them again when a view says hello. A URL is made once per key and revoked
// when the bytes of that key change or the view goes away.

function toBytes(value) {
  if (!value) return null;
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) {
    return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (typeof value === "string") {
    // Base64, as some hosts send bytes in JSON.
    try {
      return Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
    } catch {
      return null;
    }
  }
  return null;
}

function sniff(bytes) {
  if (bytes[0] === 0x89 && bytes[1] === 0x50) return "image/png";
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return "image/jpeg";
  if (bytes[0] === 0x47 && bytes[1] === 0x49) return "image/gif";
  if (bytes[0] === 0x52 && bytes[1] === 0x49) return "image/webp";
  return "image/png";
}

function equal(a, b) {
  if (a.byteLength !== b.byteLength) return false;
  for (let i = 0; i < a.byteLength; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class MediaCache {
  constructor() {
    this.entries = new Map(); // key -> {bytes, url}
  }

  /** Take a `media` message; returns true when some URL changed. */
  add(items, buffers) {
    let changed = false;
    (items || []).forEach((item, i) => {
      const bytes = toBytes(buffers && buffers[i]);
      if (!item || typeof item.key !== "string" || !bytes) return;
      const old = this.entries.get(item.key);
      if (old && equal(old.bytes, bytes)) return;
      if (old) URL.revokeObjectURL(old.url);
      // Copy: the buffer belongs to the widget message.
      const copy = bytes.slice();
      const type = typeof item.mime === "string" && item.mime.startsWith("image/") ? item.mime : sniff(copy);
      this.entries.set(item.key, { bytes: copy, url: URL.createObjectURL(new Blob([copy], { type })) });
      changed = true;
    });
    return changed;
  }

  url(key) {
    return this.entries.get(key)?.url || "";
  }

  /** Point every <img data-key> under `root` at its current URL. */
  refresh(root) {
    for (const img of root.querySelectorAll("img[data-key]")) {
      const url = this.url(img.dataset.key);
      if (url && img.getAttribute("src") !== url) img.src = url;
    }
  }

  dispose() {
    for (const entry of this.entries.values()) URL.revokeObjectURL(entry.url);
    this.entries.clear();
  }
}
