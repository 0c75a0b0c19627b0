# syntax=docker/dockerfile:1
ARG BASE=docker-archive:/tmp/builder-lab/busybox.tar
FROM ${BASE} AS unused
RUN echo unused stage

FROM $BASE AS build
ARG MSG=hi
RUN echo building $MSG
RUN echo "failing in a middle stage" && \
    false && \
    echo never

FROM $BASE
COPY --from=build /etc/passwd /x
