# The image a docker backend starts workers from (the default of TaskEnvironment(image=...)).
# Built by scripts/docker_engine.sh from a context holding wheels/ (the project's wheel and every
# dependency, made on the host): nothing here reaches the network.
ARG BASE=fanout-base:bookworm
FROM ${BASE}
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/fanout \
 && /opt/fanout/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels fanout \
 && rm -rf /tmp/wheels \
 && useradd --uid 10001 --user-group --home-dir /home/fanout --create-home --shell /usr/sbin/nologin fanout
ENV PATH=/opt/fanout/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/fanout
# The launcher names the worker command itself (python -m fanout.dispatch.worker --connect HOST:PORT).
ENTRYPOINT ["python3", "-m", "fanout.dispatch.worker"]
