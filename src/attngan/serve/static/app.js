// The AttnGAN page: one form, one POST /api/v1/generate, and the results drawn from its JSON.
// Everything is built with DOM calls (no innerHTML), so no text from a response is parsed as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const form = $("form"), caption = $("caption"), seed = $("seed"), count = $("n");
  const withAttention = $("attention"), button = $("generate"), status = $("status"), picker = $("model");
  const models = {};      // the server's models by name (/api/v1/models)
  let model = null;       // the one chosen
  let last = null;        // the last successful response
  let current = 0;        // the sample on display
  let attStage = 0;       // which attentional stage's overlays are on display

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c) node.append(c);
    return node;
  }

  const dataUrl = (png) => "data:image/png;base64," + png;

  function fileName(kind) {
    const words = last.tokens.slice(0, 6).join("-").replace(/[^a-z0-9-]/gi, "");
    return `attngan_${words}_seed${last.seed}_sample${current}_${kind}.png`;
  }

  function downloadLink(png, kind, text) {
    return el("a", { class: "download", href: dataUrl(png), download: fileName(kind), text: text || "download" });
  }

  function setStatus(text, kind) {
    status.textContent = text;
    status.className = "status" + (kind ? " " + kind : "");
  }

  // The models: a picker when there are several; each brings its summary, words and examples.
  function choose(name) {
    model = models[name];
    const info = $("model-info");
    info.textContent = "";
    const res = model.stages.map((s) => s.label).join(" → ");
    info.append(el("b", { text: model.name }),
                ` · ${res} · ${model.vocabulary_size}-word vocabulary · ${model.device}`);
    for (const node of document.querySelectorAll(".subject")) node.textContent = model.subject;
    document.title = `AttnGAN · text to ${model.subject}`;
    caption.placeholder = model.examples[0] || "";
    const examples = $("examples");
    examples.textContent = "";
    examples.hidden = model.examples.length === 0;
    if (model.examples.length) examples.append(el("span", { class: "muted", text: "Try:" }));
    for (const text of model.examples) {
      const chip = el("button", { type: "button", class: "chip example", text });
      chip.addEventListener("click", () => {
        caption.value = text;
        updateCount();
        form.requestSubmit();
      });
      examples.append(chip);
    }
  }

  fetch("/api/v1/models").then((r) => r.json()).then((data) => {
    for (const m of data.models) {
      models[m.name] = m;
      picker.append(el("option", { value: m.name, text: `${m.name} (${m.subject}s)` }));
    }
    picker.value = data.default;
    $("model-row").hidden = data.models.length < 2;
    choose(data.default);
  }).catch(() => { $("model-info").textContent = "model information unavailable"; });
  picker.addEventListener("change", () => choose(picker.value));

  // Composer.
  const updateCount = () => { $("chars").textContent = String(caption.value.length); };
  caption.addEventListener("input", updateCount);
  caption.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  $("new-seed").addEventListener("click", () => {
    seed.value = String(Math.floor(Math.random() * 2147483647));
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = caption.value.trim();
    if (!text) { setStatus("Type a sentence first.", "error"); caption.focus(); return; }
    const body = { caption: text, n: Number(count.value), attention: withAttention.checked };
    if (model) body.model = model.name;
    if (seed.value !== "") {
      const s = Number(seed.value);
      if (!Number.isSafeInteger(s) || s < 0) { setStatus("The seed must be a whole number ≥ 0.", "error"); return; }
      body.seed = s;
    }
    button.disabled = true;
    setStatus("Generating…", "busy");
    const started = performance.now();
    try {
      const r = await fetch("/api/v1/generate", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      const data = await r.json().catch(() => ({ error: `the server answered ${r.status}` }));
      if (!r.ok) {
        let msg = data.error || `the server answered ${r.status}`;
        if (data.dropped && data.dropped.length) msg += ` (unknown: ${data.dropped.join(", ")})`;
        if (r.status === 503) msg += ` — try again in ${r.headers.get("Retry-After") || "a few"} s`;
        setStatus(msg, "error");
        return;
      }
      last = data; current = 0; attStage = Math.max(0, data.samples[0].attention.length - 1);
      render();
      const ms = Math.round(performance.now() - started);
      setStatus(`Done in ${ms} ms.`);
    } catch (err) {
      setStatus("Could not reach the server: " + err.message, "error");
    } finally {
      button.disabled = false;
    }
  });

  // Results.
  function tokenChips(container, words, cls) {
    container.textContent = "";
    for (const w of words) container.append(el("span", { class: "tok" + (cls ? " " + cls : ""), text: w }));
  }

  function render() {
    $("results").hidden = false;
    tokenChips($("tokens"), last.tokens);
    tokenChips($("dropped"), last.dropped, "dropped");
    $("dropped-row").hidden = last.dropped.length === 0;
    tokenChips($("truncated"), last.truncated, "truncated");
    $("truncated-row").hidden = last.truncated.length === 0;
    const t = last.timing;
    const shared = t.batch_images > last.n ? `, batched with ${t.batch_images - last.n} other image(s)` : "";
    $("meta").textContent = `${last.model} · seed ${last.seed} · ${last.n} sample(s) · server ${Math.round(t.total_ms)} ms ` +
      `(generator ${Math.round(t.inference_ms)} ms, queue ${Math.round(t.queue_ms)} ms, ` +
      `images ${Math.round(t.render_ms)} ms${shared})`;
    renderSamplePicker();
    renderSample();
  }

  function renderSamplePicker() {
    const strip = $("samples");
    strip.textContent = "";
    strip.hidden = last.samples.length < 2;
    last.samples.forEach((s, k) => {
      const final = s.stages[s.stages.length - 1];
      const b = el("button", { class: "thumb", type: "button", "aria-selected": String(k === current),
                               title: `sample ${k + 1}` },
                   el("img", { src: dataUrl(final.png), alt: `sample ${k + 1}` }));
      b.addEventListener("click", () => { current = k; renderSamplePicker(); renderSample(); });
      strip.append(b);
    });
  }

  function renderSample() {
    const s = last.samples[current];
    const final = s.stages[s.stages.length - 1];
    $("final").src = dataUrl(final.png);
    const cap = $("final-caption");
    cap.textContent = "";
    cap.append(el("span", { text: `final stage · ${final.label}` }), downloadLink(final.png, final.label));
    // What an independent captioner reads in the final image; without one, why there is none.
    const think = $("final-think");
    const note = models[last.model] && models[last.model].captioner_note;
    think.textContent = "";
    think.hidden = !s.caption && !note;
    if (s.caption) think.append(el("span", { class: "muted", text: "I think it's: " }), el("q", { text: s.caption }));
    else if (note) think.append(el("span", { class: "muted note", text: `No "I think it's" line: ${note}.` }));

    const stages = $("stages");
    stages.textContent = "";
    for (const st of s.stages) {
      stages.append(el("figure", { class: "stage" },
        el("img", { class: "stage-image", src: dataUrl(st.png), alt: `stage ${st.stage}, ${st.label}` }),
        el("figcaption", {}, el("span", { text: `stage ${st.stage} · ${st.label}` }),
           downloadLink(st.png, st.label, "↓"))));
    }
    renderAttention(s);
  }

  function renderAttention(s) {
    const card = $("attention-card");
    card.hidden = s.attention.length === 0;
    if (card.hidden) return;
    const tabs = $("att-tabs");
    tabs.textContent = "";
    if (s.attention.length > 1) {
      s.attention.forEach((a, i) => {
        const st = s.stages[a.stage];
        const tab = el("button", { class: "tab", type: "button", role: "tab", "aria-selected": String(i === attStage),
                                   text: `stage ${a.stage} (${st ? st.label : ""})` });
        tab.addEventListener("click", () => { attStage = i; renderAttention(s); });
        tabs.append(tab);
      });
    }
    const a = s.attention[Math.min(attStage, s.attention.length - 1)];
    // The five words with the most concentrated attention (the original showed its top five);
    // a score near zero means no pixel attended to the word much more than to the others.
    const top = new Set([...a.words].filter((w) => w.score > 1e-3)
      .sort((x, y) => y.score - x.score).slice(0, 5).map((w) => w.index));
    const grid = $("att-grid");
    grid.textContent = "";
    for (const w of a.words) {
      grid.append(el("figure", { class: "word" + (top.has(w.index) ? " strong" : "") },
        el("img", { class: "attention-overlay", src: dataUrl(w.png), alt: `attention of "${w.word}"` }),
        el("figcaption", {},
           el("span", {}, el("span", { class: "idx", text: String(w.index) }), el("span", { class: "w", text: w.word })),
           downloadLink(w.png, `stage${a.stage}_word${w.index}-${w.word.replace(/[^a-z0-9]/gi, "")}`, "↓"))));
    }
  }
})();
