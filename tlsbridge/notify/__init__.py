"""Notifications (config `notify`): which events to announce (events, pure), what the messages say
(messages, pure), the settings (settings), and the glue that runs after a pass (dispatch).

Sending goes through Apprise (tlsbridge.adapters.notify), imported only when a message must go out.
"""
