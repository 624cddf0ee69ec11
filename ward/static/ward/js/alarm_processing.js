// Whether alarms are processed at all: with no consumer running (crashed, its host down,
// stuck) nobody raises, escalates or publishes an alarm, and the tiles only turn "Stale" one
// by one. Both pages ask the API (api:alarm-processing, the consumers' heartbeat by the
// database's clock) every few seconds and show an alarm banner while processing is stopped,
// distinct from the connection banner (this page's own connection). A status that cannot be
// read is never taken for "ok": the banner then says it is unknown.

import { ApiError, apiFetch, Poller, serverNow } from "ward/api";
import { dateTimeText, h, timeText } from "ward/common";

// The time of the last heartbeat: "03:12:05" today, "02 Dec 03:12:05" before.
function sinceText(iso) {
  const then = new Date(iso);
  const today = new Date(serverNow());
  return then.toDateString() === today.toDateString() ? timeText(iso) : dateTimeText(iso);
}

const WHAT_TO_DO =
  "Watch every patient at the bedside and call the on-call engineer to restart alarm processing.";

// The banner's content for an answer of the API (or null: hidden), or for a failure.
export function alarmProcessingContent(answer, error = null) {
  if (error) {
    const reason = error instanceof ApiError ? error.message : "no answer from the server";
    return {
      state: "unknown",
      parts: [h("strong", {}, "ALARM PROCESSING STATUS UNKNOWN"), `: ${reason.replace(/\.?$/, ".")} Do not rely on this screen for alarms until it is known.`],
    };
  }
  if (answer.status === "ok") return null;
  const since = answer.status === "stopped" ? ` since ${sinceText(answer.last_heartbeat_at)}` : "";
  const why = answer.status === "stopped" ? "no consumer is running" : "alarm processing has never run here";
  return {
    state: answer.status,
    parts: [
      h("span", { class: "alarm-processing-icon", "aria-hidden": "true" }, "⚠"),
      h("strong", {}, `ALARMS NOT PROCESSED${since}`),
      `: ${why}. Patients are not being watched. `,
      WHAT_TO_DO,
    ],
  };
}

// Polls every `alarmProcessingPollSeconds` and keeps #alarm-processing (base.html) in step; the
// banner is rebuilt only when its text changes (role="alert" announces each change once).
export function alarmProcessingWatch({ alarmProcessingUrl, alarmProcessingPollSeconds }) {
  const banner = document.getElementById("alarm-processing");
  let shown = "";

  function show(content) {
    document.body.dataset.alarmProcessing = content?.state ?? "ok";
    const text = content ? content.parts.map((p) => (typeof p === "string" ? p : p.textContent)).join("") : "";
    if (text === shown) return;
    shown = text;
    banner.className = `banner banner--alarm-processing banner--alarm-processing-${content?.state ?? "ok"}`;
    banner.replaceChildren(...(content ? content.parts : []));
    banner.hidden = !content;
    dispatchEvent(new Event("resize")); // the ward lays its tiles out again below the banner
  }

  new Poller({
    intervalSeconds: alarmProcessingPollSeconds,
    task: async () => show(alarmProcessingContent(await apiFetch(alarmProcessingUrl))),
    onState: (state, error) => {
      if (state !== "live") show(alarmProcessingContent(null, error));
    },
  }).start();
}
