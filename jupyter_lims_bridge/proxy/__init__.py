"""The port proxy: ``lims/proxy[/absolute]/<port or service>/…`` relayed to ``127.0.0.1``.

One module per job, each saying what it owns and must not do:

- :mod:`.access`: who may pass, the one audited decision (new requests and
  the sweeper's re-checks);
- :mod:`.headers`: header hygiene, query credentials, forwarding headers,
  body framing checks, CORS preflight answers;
- :mod:`.upstream`: the connection pool and one HTTP exchange, with every
  tornado internal the relay relies on;
- :mod:`.service`: mode, ports, tokens, live sessions and their sweeper, the
  session events;
- :mod:`.relay`: one let-in request relayed for the tornado handler, from
  the exchange ``ProxyService.connect`` opened to the answer;
- :mod:`.tunnel`: the websocket byte tunnel after the handshake;
- :mod:`.services`: named services, launched through jupyter-server-proxy.

The tornado handlers (``handlers/proxy.py``) only wire a request to these.
Nothing is imported here, so importing a submodule costs only that submodule.
"""
