// The search page of `hysafe serve`. Everything it shows that came from the server (hit texts,
// ids, model names, errors) goes through textContent or a whitelisted class name, never through
// innerHTML: an index of hostile prompts stays text on this page.
"use strict";

const $ = (id) => document.getElementById(id);
const LABELS = new Set(["safe", "unsafe", "unknown"]);

// <tag class=cls>text</tag>, with the text set as text
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function labelClass(label) {
  return LABELS.has(label) ? label : "unknown";
}

// ------------------------------------------------------------------------------ state in the URL

function readUrl() {
  const p = new URLSearchParams(location.search);
  if (p.has("q")) $("q").value = p.get("q");
  if (p.has("k")) $("k").value = p.get("k");
  if (p.has("tau")) $("tau").value = p.get("tau");
  if (p.has("traversal")) $("traversal").checked = !["0", "false", "off"].includes(p.get("traversal"));
  return p.has("q") && p.get("q") !== "";
}

function writeUrl() {
  const p = new URLSearchParams();
  p.set("q", $("q").value);
  p.set("k", $("k").value);
  p.set("tau", $("tau").value);
  p.set("traversal", $("traversal").checked ? "1" : "0");
  history.replaceState(null, "", "?" + p.toString());
}

// ------------------------------------------------------------------------------ served models

function showModels(models) {
  const list = $("models");
  list.replaceChildren();
  for (const m of models) {
    const item = el("li", null);
    item.append(el("strong", null, m.name), " ");
    const facts = [m.kind];
    if (m.index) facts.push(`${m.index.size} ${m.index.modality}s indexed`);
    else facts.push("classify only");
    facts.push(m.traversal ? "traversal available" : "no traversal");
    facts.push(m.threshold === null ? "no decision threshold" : `unsafe from score ${m.threshold.toFixed(3)}`);
    item.append(el("span", "facts", "(" + facts.join(", ") + ")"));
    list.append(item);
  }
}

function showExamples(examples) {
  const box = $("examples");
  box.replaceChildren();
  if (!examples.length) return;
  box.append(el("span", null, "Try: "));
  for (const ex of examples) {
    const b = el("button", "example " + labelClass(ex.label), ex.text);
    b.type = "button";
    b.title = `a ${labelClass(ex.label)} caption of the labelled data`;
    b.addEventListener("click", () => {
      $("q").value = ex.text;
      $("img").value = "";
      run();
    });
    box.append(b);
  }
}

async function loadInfo() {
  try {
    const [models, examples] = await Promise.all([
      fetch("/models").then((r) => r.json()),
      fetch("/examples").then((r) => r.json()),
    ]);
    showModels(models);
    showExamples(examples.examples || []);
  } catch (e) {
    $("err").textContent = "could not reach the service: " + e;
  }
}

// ------------------------------------------------------------------------------ results

function hitNode(h) {
  const hit = el("div", "hit");
  if (h.thumb) {
    const img = el("img");
    img.src = h.thumb;
    img.alt = h.id;
    hit.append(img);
  } else {
    hit.append(el("div", "text", h.text));
  }
  hit.append(el("div", "id", h.id));
  hit.title = h.id;
  const label = el("span", "badge " + labelClass(h.label), "data: " + labelClass(h.label));
  label.title = "the label of this item in the labelled manifest (not the model's decision)";
  hit.append(label, " ");
  const decision = h.unsafe === null || h.unsafe === undefined ? "no threshold" : h.unsafe ? "unsafe" : "safe";
  const model = el("span", "decision " + (h.unsafe ? "unsafe-text" : ""), "model: " + decision);
  model.title = "the model's own decision: its NSFW score against its threshold";
  const score = el("span", "score", "nsfw " + Number(h.score).toFixed(3));
  score.title = "NSFW score under this model's own scorer, higher is more likely unsafe (scales differ between models)";
  const dist = el("span", "score", "d " + Number(h.distance).toFixed(3));
  dist.title = "distance from the query in this model's space (hits nearest first)";
  hit.append(el("br"), model, " ", score, " ", dist);
  return hit;
}

function showResults(results) {
  const cols = $("cols");
  cols.replaceChildren();
  for (const [name, hits] of Object.entries(results)) {
    const col = el("div", "col");
    col.dataset.model = name;
    col.append(el("h3", null, name));
    const list = el("div", "hits");
    for (const h of hits) list.append(hitNode(h));
    col.append(list);
    cols.append(col);
  }
}

async function settle() {
  const pending = [...document.images].map((i) =>
    i.complete ? 0 : new Promise((ok) => { i.onload = i.onerror = ok; })
  );
  await Promise.all(pending);
  const counts = [...document.querySelectorAll(".col")].map((c) => [
    c.dataset.model,
    [...c.querySelectorAll("img")].filter((i) => i.naturalWidth > 0).length,
  ]);
  document.body.dataset.done = JSON.stringify(Object.fromEntries(counts));
  document.body.dataset.width = String(document.documentElement.scrollWidth);
}

function request() {
  const k = parseInt($("k").value, 10);
  const tau = $("tau").value;
  const traversal = $("traversal").checked;
  if ($("img").files.length) {
    const fd = new FormData();
    fd.append("image", $("img").files[0]);
    fd.append("k", String(k));
    fd.append("tau", tau);
    fd.append("traversal", traversal ? "true" : "false");
    return fetch("/search", { method: "POST", body: fd });
  }
  writeUrl();
  return fetch("/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text: $("q").value, k, tau, traversal }),
  });
}

async function run() {
  $("err").textContent = "";
  $("status").textContent = "searching...";
  document.body.classList.add("busy");
  try {
    const r = await request();
    const data = await r.json();
    if (!r.ok) {
      $("err").textContent = `${data.error} (${data.field})`;
      return;
    }
    showResults(data.results);
  } catch (e) {
    $("err").textContent = "the request failed: " + e;
  } finally {
    $("status").textContent = "";
    document.body.classList.remove("busy");
    await settle();
  }
}

$("f").addEventListener("submit", (e) => {
  e.preventDefault();
  run();
});
loadInfo();
if (readUrl()) run();
