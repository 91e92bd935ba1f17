"""DLMS/COSEM frames and APDUs as plain JSON-ready dicts: what `pollerd decode dlms` prints and what a raw
request through a dlms meter returns. A password in an AARQ is never shown."""

from __future__ import annotations

from typing import Any

from pollerd.errors import FrameError, MeterError

from . import acse, axdr, hdlc, wrapper, xdlms
from .errors import ApduError, HdlcError
from .hdlc import LinkParams, ServerAddress

__all__ = ["decode", "decode_apdu", "value_json"]


def value_json(v: Any) -> Any:
    if isinstance(v, bytes):
        out: Any = v.hex(" ").upper()
        if len(v) == 12:
            try:
                when = axdr.CosemDateTime.parse(v)
            except FrameError:
                return out
            if when.wall() is not None:
                return {"hex": out, "datetime": str(when)}
        return out
    if isinstance(v, (list, tuple)):
        return [value_json(x) for x in v]
    if isinstance(v, axdr.BitString):
        return {"bits": v.bits}
    if isinstance(v, axdr.CosemDateTime):
        return {"datetime": str(v)}
    if isinstance(v, xdlms.DataAccessFailure):
        return {"error": v.reason, "code": v.code}
    if isinstance(v, float) and v != v:  # NaN has no JSON form
        return None
    return v


def _attr(a: xdlms.Attr, access: tuple[int, bytes] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"class": a.class_id, "obis": xdlms.obis_text(a.obis), "attribute": a.attr}
    if access is not None:
        d["access"] = {"selector": access[0], "parameters": value_json(axdr.decode(access[1]))}
    return d


def decode_apdu(apdu: bytes) -> dict[str, Any]:
    tag = apdu[0] if apdu else -1
    if tag == acse.AARQ:
        q = acse.parse_aarq(apdu)
        return {"type": "aarq", "context": q.context.hex(), "mechanism": acse.mechanism_name(q.mechanism),
                "password": "***" if q.password else None, "conformance": acse.conformance_names(q.conformance),
                "max_pdu": q.max_pdu}
    if tag == acse.AARE:
        try:
            a = acse.parse_aare(apdu)
        except MeterError as exc:
            return {"type": "aare", "accepted": False, "reason": getattr(exc, "reason", ""), "text": str(exc)}
        return {"type": "aare", "accepted": True, "conformance": acse.conformance_names(a.conformance),
                "max_pdu": a.max_pdu}
    if tag in (acse.RLRQ, acse.RLRE):
        return {"type": "rlrq" if tag == acse.RLRQ else "rlre", "reason": acse.parse_release(apdu, tag)}
    if tag == xdlms.GET_REQUEST:
        r = xdlms.parse_get_request(apdu)
        kind = {1: "normal", 2: "next", 3: "with-list"}[r.kind]
        return {"type": f"get-request-{kind}", "invoke": r.invoke & 0x0F, "block": r.block if r.kind == 2 else None,
                "items": [_attr(a, acc) for a, acc in r.items]}
    if tag in (xdlms.GET_RESPONSE, xdlms.EXCEPTION_RESPONSE, 0x0E):
        try:
            g = xdlms.parse_get_response(apdu)
        except MeterError as exc:
            return {"type": "exception", "reason": getattr(exc, "reason", ""), "text": str(exc)}
        kind = {1: "normal", 2: "with-datablock", 3: "with-list"}[g.kind]
        d: dict[str, Any] = {"type": f"get-response-{kind}", "invoke": g.invoke, "results": value_json(g.results)}
        if g.kind == 2:
            d.update(last=g.last, block=g.block, raw=g.raw.hex(" ").upper())
        return d
    if tag == xdlms.SET_REQUEST:
        invoke, attr, value = xdlms.parse_set_request(apdu)
        return {"type": "set-request-normal", "invoke": invoke & 0x0F, "item": _attr(attr), "value": value_json(value)}
    if tag == xdlms.SET_RESPONSE:
        code = xdlms.parse_set_response(apdu)
        return {"type": "set-response-normal", "invoke": apdu[2] & 0x0F,
                "result": xdlms.ACCESS_RESULTS.get(code, code)}
    if tag == 0x0F and len(apdu) >= 6:
        i = 5
        when = None
        if apdu[i] == 0x09:
            i += 1
        # The date-time is optional and may be cut short in a damaged frame: an error, not an IndexError.
        if i < len(apdu) and apdu[i] == 0x0C:
            if len(apdu) < i + 13:
                raise ApduError("data-notification: date-time cut short", apdu[:32])
            when = str(axdr.CosemDateTime.parse(apdu[i + 1:i + 13]))
            i += 13
        elif i < len(apdu) and apdu[i] == 0x00:
            i += 1
        return {"type": "data-notification", "datetime": when, "body": value_json(axdr.decode(apdu[i:]))}
    raise ApduError(f"APDU tag 0x{tag & 0xFF:02X} is not one pollerd decodes", apdu[:32])


def _frame_json(f: hdlc.Frame) -> dict[str, Any]:
    # The client address is one byte; whichever side it is on, the other is the server.
    client, server = (f.dest, f.src) if len(f.dest) == 1 and len(f.src) != 1 else (f.src, f.dest)
    srv = ServerAddress.decode(server)
    d: dict[str, Any] = {"kind": f.kind, "dest": f.dest.hex(" ").upper(), "src": f.src.hex(" ").upper(),
                         "server": {"logical": srv.logical, "physical": srv.physical, "size": srv.size},
                         "client_sap": client[0] >> 1, "control": f"{f.control:02X}", "pf": f.pf,
                         "segmented": f.segmented, "info": f.info.hex(" ").upper()}
    if f.is_i:
        d.update(ns=f.ns, nr=f.nr)
    elif f.kind in ("RR", "RNR"):
        d["nr"] = f.nr
    return d


def _redacted(info: bytes) -> str:
    """The information field as hex with the AARQ's calling-authentication-value (AC L 80 L pw) as stars."""
    i = info.find(b"\xac")
    text = info.hex(" ").upper().split(" ")
    if i >= 0 and i + 4 <= len(info) and info[i + 2] == 0x80:
        n = info[i + 3]
        text[i + 4:i + 4 + n] = ["**"] * n
    return " ".join(text)


def decode(raw: bytes) -> dict[str, Any]:
    if raw[:2] == b"\x00\x01" and len(raw) >= 8:
        pdus = wrapper.WrapperDeframer().feed(raw)
        if len(pdus) != 1:
            raise ApduError("not exactly one whole wrapper PDU", raw)
        w = pdus[0]
        return {"framing": "wrapper", "source": w.source, "dest": w.dest, "apdu": decode_apdu(w.apdu)}
    wire = raw if raw[:1] == b"\x7e" else b"\x7e" + raw + b"\x7e"
    frames = hdlc.Deframer().feed(wire)
    if len(frames) != 1:
        raise HdlcError("not exactly one whole HDLC frame", raw)
    f = frames[0]
    out: dict[str, Any] = {"framing": "hdlc", "frame": _frame_json(f)}
    if f.kind in ("SNRM", "UA"):
        p = LinkParams.decode(f.info)
        out["link"] = {"max_info_tx": p.max_info_tx, "max_info_rx": p.max_info_rx, "window_tx": p.window_tx,
                       "window_rx": p.window_rx}
    elif f.info and not f.segmented and f.info[:3] in (hdlc.LLC_REQUEST, hdlc.LLC_RESPONSE):
        out["apdu"] = decode_apdu(f.info[3:])
        if out["apdu"]["type"] == "aarq":
            out["frame"]["info"] = _redacted(f.info)
    elif f.info:
        out["segment"] = True
    return out
