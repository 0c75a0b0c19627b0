FROM docker-archive:/tmp/builder-lab/busybox.tar AS base
RUN echo base ok

FROM base AS tools
RUN echo tools >/tools.txt

FROM base
COPY --from=tools /tools.txt /tools.txt
RUN sh -c 'echo failing in the last stage; exit 3'
