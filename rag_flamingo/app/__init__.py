"""``rag_app``: the interactive page of rag-flamingo (Gradio), one module per job:

- `main`: the console script (Hydra config ``rag_app.yaml``, served on 127.0.0.1);
- `context`: the stores, encoders, predictors and model the tabs share, and the one-job-at-a-time lock;
- `ask`, `chat`, `labels`, `results`: what each tab does (no Gradio in them: tested directly);
- `uploads`: checks of uploaded clips; `render`: players and shot tables; `ui`: the page itself.

Gradio is an optional dependency (``pip install rag-flamingo[app]``); only `ui` and `main` import it.
"""
