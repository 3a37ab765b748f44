"""The Quorum dashboard: a Streamlit app over the services' gRPC APIs.

:mod:`dashboard.auth` signs a user in with an API key (and a TOTP code when the key
needs one), :mod:`dashboard.data` reads a :class:`~dashboard.data.Snapshot` from the
four services with that key, :mod:`dashboard.formatting` turns figures into text,
:mod:`dashboard.app` renders them and :mod:`dashboard.launch` starts the app
(``dashboard.launch.launch(host, port)``).
"""
