FROM docker-archive:/tmp/builder-lab/busybox.tar
COPY present.txt /present.txt
COPY missing.txt /missing.txt
RUN echo never
