"""The Quorum operator dashboard: a Streamlit app over the services' gRPC APIs.

:mod:`dashboard.data` reads a :class:`~dashboard.data.Snapshot` from the four
services, :mod:`dashboard.formatting` turns figures into text, :mod:`dashboard.app`
renders them and :mod:`dashboard.launch` starts the app
(``dashboard.launch.launch(host, port)``).
"""
