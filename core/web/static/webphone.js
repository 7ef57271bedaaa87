// The browser as the seat's phone: SIP over WebSocket to Asterisk, audio over
// WebRTC (DTLS-SRTP), with JsSIP (served by the backend at /vendor/jssip.min.js,
// installed by the set-up from the npm registry). No framework: the desk page
// (or phone.html) loads jssip.min.js, then this file, and drives
//
//   JiejingPhone.start({ wsUrl, sipUri, password, iceServers, autoAnswer, audio, onState, onIncoming })
//   JiejingPhone.answer()   JiejingPhone.hangup()   JiejingPhone.stop()
//   JiejingPhone.state      // "idle", "connecting", "registered", "ringing", "in-call", "ended",
//                           // "unregistered", "disconnected", "error"
//
// onState(state, detail) is called at every change; detail.error says what
// went wrong on "error" (registration refused, no microphone, call failed).
// onIncoming({ from, display }) when a call rings, before any auto-answer.
"use strict";
window.JiejingPhone = (() => {
  let ua = null;
  let session = null;
  let options = {};
  let audioEl = null;
  const phone = { state: "idle", detail: {}, codec: null, start, answer, hangup, stop };

  function setState(state, detail = {}) {
    phone.state = state;
    phone.detail = detail;
    if (options.onState) {
      try { options.onState(state, detail); } catch (err) { console.error("JiejingPhone onState:", err); }
    }
  }

  function audioElement() {
    if (options.audio) return options.audio;
    if (!audioEl) {
      audioEl = document.createElement("audio");
      audioEl.autoplay = true;
      audioEl.hidden = true;
      document.body.appendChild(audioEl);
    }
    return audioEl;
  }

  // The codec the call ended up with: the first payload type of the answered audio line.
  function negotiatedCodec(pc) {
    const sdp = (pc.currentLocalDescription || pc.localDescription || {}).sdp || "";
    const mline = sdp.split(/\r?\n/).find((l) => l.startsWith("m=audio"));
    if (!mline) return null;
    const pt = mline.split(" ")[3];
    const rtpmap = sdp.split(/\r?\n/).find((l) => l.startsWith("a=rtpmap:" + pt + " "));
    return rtpmap ? rtpmap.split(" ")[1] : pt;
  }

  function track(newSession) {
    session = newSession;
    const from = session.remote_identity.uri.user;
    const display = session.remote_identity.display_name || "";
    session.on("peerconnection", (e) => {
      e.peerconnection.addEventListener("track", (ev) => {
        const el = audioElement();
        el.srcObject = ev.streams[0];
        const played = el.play && el.play();
        if (played && played.catch) played.catch((err) => console.warn("JiejingPhone: audio not played:", err.message));
      });
    });
    session.on("confirmed", () => {
      phone.codec = negotiatedCodec(session.connection);
      setState("in-call", { from, display, codec: phone.codec });
    });
    session.on("ended", (e) => {
      session = null;
      setState("ended", { from, cause: e.cause, originator: e.originator });
    });
    session.on("failed", (e) => {
      session = null;
      // A caller who hangs up while ringing is the end of a call, not an error of the phone.
      const error = e.originator === "local" && e.cause !== JsSIP.C.causes.CANCELED ? e.cause : undefined;
      setState(error ? "error" : "ended", { from, cause: e.cause, originator: e.originator, error });
    });
    setState("ringing", { from, display });
    if (options.onIncoming) options.onIncoming({ from, display });
    if (options.autoAnswer) answer();
  }

  function start(opts) {
    if (ua) throw new Error("JiejingPhone already started");
    if (typeof JsSIP === "undefined") {
      setState("error", { error: "JsSIP is not loaded (/vendor/jssip.min.js: run the set-up)" });
      return;
    }
    options = Object.assign({ iceServers: [], autoAnswer: false }, opts);
    phone.codec = null;
    const socket = new JsSIP.WebSocketInterface(options.wsUrl);
    ua = new JsSIP.UA({
      sockets: [socket],
      uri: options.sipUri,
      password: options.password,
      register: true,
      register_expires: 300,
      session_timers: false,
      user_agent: "jiejing-desk JsSIP/" + JsSIP.version,
    });
    ua.on("connecting", () => setState("connecting"));
    ua.on("disconnected", () => { if (ua) setState("disconnected"); });
    ua.on("registered", () => setState("registered"));
    ua.on("unregistered", () => setState("unregistered"));
    ua.on("registrationFailed", (e) => setState("error", { error: "registration failed: " + e.cause }));
    ua.on("newRTCSession", (e) => {
      if (e.originator !== "remote") return;
      if (session) {  // one call at a time: the queue rings another seat
        e.session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
        return;
      }
      track(e.session);
    });
    ua.start();  // "connecting" comes from the UA, at the start and at each reconnection
  }

  function answer() {
    if (!session || phone.state !== "ringing") return false;
    session.answer({
      mediaConstraints: { audio: true, video: false },
      pcConfig: { iceServers: options.iceServers, rtcpMuxPolicy: "require" },
    });
    return true;
  }

  function hangup() {
    if (!session) return false;
    session.terminate();
    return true;
  }

  function stop() {
    if (!ua) return;
    hangup();
    const old = ua;
    ua = null;
    old.stop();
    setState("idle");
  }

  return phone;
})();
