"""The bottom of the house: small pieces every package shares (standard library only).

`atomic` (the one atomic writer), `digest` (canonical JSON and sha256), `names` ("did you mean"
and the one `UnknownNameError`), `failpoints` (named fault-injection points for the kill tests).
Nothing here imports torch or any package of this repository.
"""
