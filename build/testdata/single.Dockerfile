FROM docker-archive:/tmp/builder-lab/busybox.tar
RUN echo hello
RUN echo about to fail && \
    exit 3
RUN echo never
